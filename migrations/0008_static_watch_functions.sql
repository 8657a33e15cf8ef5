-- a single-row write costs about what a hand-written row trigger costs (issue 18;
-- docs/BENCHMARKS.md, "Writer cost of a single-row write"), and a 'wal' feed mode in which no
-- watch trigger is installed at all.
--
-- where the time went, for one single-row insert (pg_stat_statements with nested statements,
-- pg_stat_user_functions, perf of the backend): the watch trigger ran its payload query as
-- dynamic sql (execute format(...)), parsed and planned again on every statement, once per
-- watched column, then called statgate.emit_change, a second plpgsql function, which read
-- statgate.settings to pick the feed. a counter's upsert (insert ... on conflict do update)
-- fires both the insert and the update statement-level triggers of its stats table, so a
-- watched counter ran the watch twice per write, once over an empty transition table; and the
-- set-based upsert (aggregate, sort, speculative insertion) is the most expensive way to add 1
-- to one row.
--
-- now:
--   * statgate.watch generates one trigger function per watched table, statgate.watch_<oid>:
--     static sql over the transition tables (plans cached for the session), one pass for all
--     the watched columns, the feed of the current mode inlined (pg_notify, or an insert into
--     statgate.changes). the payloads are the same text as before, byte for byte, with the same
--     split and overflow rules (statgate.emit_parts splits, as notify_changes did).
--     statgate.set_feed_mode regenerates them for a new mode.
--   * statgate.watches lists the watched tables and their columns (the registry a feed without
--     triggers needs), maintained by watch and unwatch.
--   * feed mode 'wal': the watch triggers are dropped (a disabled trigger would still make
--     postgresql capture its transition tables) and re-created when the mode changes back. the
--     gateway side of 'wal' is not part of this migration.
--   * a declared counter's trigger applies a statement whose counted rows all fall in one group
--     (every single-row write) as one update of that group's row, which also builds the change
--     payload of its stats table and sends it (statgate.send_change): the stats table's watch
--     trigger then skips that one statement (statgate.watch_wanted_sql). anything else (a new or
--     emptied group, several groups) takes the set-based statements as before, watched as before.
-- existing watches and counters are re-generated at the end (no backfill).

-- the feed mode ------------------------------------------------------------------------------

alter table statgate.settings drop constraint if exists settings_feed_mode_check;
alter table statgate.settings add constraint settings_feed_mode_check
  check (feed_mode in ('notify', 'table', 'wal'));

-- sends one payload the configured way and never raises; a payload over 7,900 bytes goes as
-- the overflow of its table (the payload without "rows", with "overflow": true). in 'notify'
-- mode an sql function that postgresql inlines into its caller (a pg_notify), in 'table' mode
-- an insert into statgate.changes with the owner's rights (a failure is counted by
-- change_lost), in 'wal' mode nothing. regenerated with the mode; only the owner and statgate's
-- functions call it.
create or replace function statgate.install_send_change(mode text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  sent text := $s$case when pg_catalog.octet_length(change) operator(pg_catalog.<=) 7900 then change
    else ((change::pg_catalog.jsonb operator(pg_catalog.-) 'rows') operator(pg_catalog.||) '{"overflow": true}')::pg_catalog.text end$s$;
begin
  if mode = 'table' then
    execute format($f$create or replace function statgate.send_change(change text) returns void
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $b$
    begin
      insert into statgate.changes (payload) values (%s);
    exception when others then
      perform statgate.change_lost(coalesce(change::jsonb ->> 'schema', ''), coalesce(change::jsonb ->> 'table', ''), sqlerrm);
    end;
    $b$ $f$, sent);
  elsif mode = 'wal' then
    create or replace function statgate.send_change(change text) returns void
    language plpgsql as $f$ begin null; end; $f$;
  else
    -- fully qualified: it runs with the search_path of its caller.
    execute format($f$create or replace function statgate.send_change(change text) returns void
    language sql as $b$ select pg_catalog.pg_notify('statgate_changes', %s) $b$ $f$, sent);
  end if;
  revoke execute on function statgate.send_change(text) from public;
end;
$$;

-- the mode statgate.send_change was generated for.
create or replace function statgate.send_change_mode() returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select case when p.prosrc like '%pg_notify%' then 'notify' when p.prosrc like '%statgate.changes%' then 'table' else 'wal' end
  from pg_proc p where p.oid = to_regprocedure('statgate.send_change(text)')
$$;

select statgate.install_send_change(feed_mode) from statgate.settings;

-- payload text ------------------------------------------------------------------------------

-- the sql expression of a payload's "rows" object as text, as jsonb prints it: one key per
-- distinct watched column, keys in jsonb's order (shorter first, then bytewise), ", " and ": "
-- between; `value` renders a column's array of values (%1$I is the column).
create or replace function statgate.rows_sql(cols text[], value text) returns text
language sql immutable as $$
  select '''{'' || ' || string_agg(format('%L || ', to_json(c)::text || ': ') || format(value, c),
                                   ' || '', '' || ' order by octet_length(c), c::bytea) || ' || ''}'''
  from (select distinct c from unnest(cols) c) u
$$;

-- the sql expression of a whole payload as text, as jsonb prints it (keys v, at, op, rows,
-- table, schema); `op`, `tbl` and `schema` are sql expressions of json text.
create or replace function statgate.payload_sql(op text, rows_expr text, tbl text, schema text) returns text
language sql immutable as $$
  select format($p$'{"v": 1, "at": ' || (date_part('epoch', clock_timestamp()) * 1000000)::bigint || ', "op": ' || %s || ', "rows": ' || %s || ', "table": ' || %s || ', "schema": ' || %s || '}'$p$,
    op, rows_expr, tbl, schema)
$$;

-- the watches --------------------------------------------------------------------------------

-- one row per watched table. fn is its generated trigger function, generated_for the feed mode
-- its body (and whether its triggers are installed) was generated for.
create table if not exists statgate.watches (
  tbl regclass primary key,
  columns text[] not null,
  fn regprocedure,
  generated_for text
);

-- the statement that sends the text expression `payload` in feed mode `mode`.
create or replace function statgate.emit_sql(mode text, payload text) returns text
language sql immutable as $$
  select case mode
    when 'table' then format('insert into statgate.changes (payload) values (%s)', payload)
    else format('perform pg_notify(%L, %s)', 'statgate_changes', payload) end
$$;

-- the payload of a statement too large for one: the values of the watched column `col` in
-- parts of at most 7,900 bytes, at most 20 of them (other columns are left out of the parts,
-- which only widens what they match); raises otherwise, and the caller sends an overflow.
-- `payload_bytes` is the size of the whole payload. as notify_changes did (migration 0007).
create or replace function statgate.emit_parts(of_schema text, of_table text, op text, rows_obj jsonb,
  col text, payload_bytes int, at_us bigint) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  head jsonb := jsonb_build_object('v', 1, 'schema', of_schema, 'table', of_table, 'op', op);
  vals jsonb := rows_obj -> col;
  n int := jsonb_array_length(vals);
  chunk_size int := greatest(1, (n * 7000 / payload_bytes));
  part jsonb;
  payload text;
  i int := 0;
begin
  if n / chunk_size + 1 > 20 then
    raise exception 'too many parts';
  end if;
  while i < n loop
    select jsonb_agg(e) into part
    from jsonb_array_elements(vals) with ordinality as t(e, k)
    where k > i and k <= i + chunk_size;
    payload := (head || jsonb_build_object('rows', jsonb_build_object(col, part), 'at', at_us))::text;
    if octet_length(payload) > 7900 then
      raise exception 'a single value is too large';
    end if;
    perform statgate.emit_change(payload);
    i := i + chunk_size;
  end loop;
end;
$$;

-- the body of the trigger function of a watched plain table: one statement-level function for
-- its insert, update and delete triggers. one query over the transition tables builds the whole
-- payload, null when the statement touched no row.
create or replace function statgate.watch_statement_body(cols text[], mode text) returns text
language sql immutable as $$
  select format($b$
declare
  statgate_payload text;
begin
  begin
    if tg_op = 'INSERT' then
      select %1$s into statgate_payload from new_rows;
    elsif tg_op = 'DELETE' then
      select %1$s into statgate_payload from old_rows;
    else
      select %1$s into statgate_payload
      from (select %2$s from new_rows union all select %2$s from old_rows) statgate_s;
    end if;
    if statgate_payload is null then
      return null; -- the statement touched no rows: nothing to say
    end if;
    if octet_length(statgate_payload) <= 7900 then
      %3$s;
    else
      perform statgate.emit_parts(tg_table_schema, tg_table_name, tg_op, statgate_payload::jsonb -> 'rows', %4$L,
        octet_length(statgate_payload), (statgate_payload::jsonb ->> 'at')::bigint);
    end if;
  exception when others then
    begin
      %5$s;
    exception when others then
      perform statgate.change_lost(tg_table_schema, tg_table_name, sqlerrm);
    end;
  end;
  return null;
end
$b$,
    statgate.payload_sql('to_json(tg_op)::text', statgate.rows_sql(cols, 'jsonb_agg(distinct to_jsonb(%1$I))::text'),
      'to_json(tg_table_name)::text', 'to_json(tg_table_schema)::text'),
    statgate.sql_list(cols, '%1$I'), statgate.emit_sql(mode, 'statgate_payload'), cols[1],
    statgate.emit_sql(mode, $e$jsonb_build_object('v', 1, 'schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op, 'overflow', true,
        'at', (date_part('epoch', clock_timestamp()) * 1000000)::bigint)::text$e$))
$$;

-- the body of the trigger function of a watched partitioned table: a row-level function
-- (cloned to every partition), whose trigger arguments are the watched table's schema and name.
-- one payload per row, with the old and new values of each column, as notify_row_changes
-- (migration 0007) sent.
create or replace function statgate.watch_row_body(cols text[], mode text) returns text
language sql immutable as $$
  select format($b$
declare
  statgate_at bigint := (date_part('epoch', statement_timestamp()) * 1000000)::bigint;
  statgate_payload text;
begin
  begin
    statgate_payload := jsonb_build_object('v', 1, 'schema', tg_argv[0], 'table', tg_argv[1], 'op', tg_op,
      'rows', %1$s, 'at', statgate_at)::text;
    if octet_length(statgate_payload) > 7900 then
      raise exception 'a single row is too large';
    end if;
    %2$s;
  exception when others then
    begin
      %3$s;
    exception when others then
      perform statgate.change_lost(tg_argv[0], tg_argv[1], sqlerrm);
    end;
  end;
  return null;
end
$b$,
    (select string_agg(format($x$jsonb_build_object(%1$L, (select jsonb_agg(distinct v)
        from (values (case when tg_op <> 'DELETE' then coalesce(to_jsonb(new.%2$I), 'null'::jsonb) end),
                     (case when tg_op <> 'INSERT' then coalesce(to_jsonb(old.%2$I), 'null'::jsonb) end)) as x(v)
        where v is not null))$x$, c, c), ' || ' order by i)
     from unnest(cols) with ordinality as u(c, i)),
    statgate.emit_sql(mode, 'statgate_payload'),
    statgate.emit_sql(mode, $e$jsonb_build_object('v', 1, 'schema', tg_argv[0], 'table', tg_argv[1], 'op', tg_op, 'overflow', true, 'at', statgate_at)::text$e$))
$$;

-- the claim a counter's in-place update of its stats table leaves for the watch of that table
-- (see statgate.watch_wanted_sql): the table and the columns the counter's own payload carries.
create or replace function statgate.claim_of(stats regclass, cols text[]) returns text
language sql immutable as $$ select stats::oid || ':' || cols::text $$;

-- the condition of the update trigger of a counter's stats table: false, once, for the update a
-- counter's trigger made in place and sent the change of itself (it set the claim in its
-- returning clause, which runs before the condition); true otherwise. it clears the claim, so
-- a claim never covers another statement. plain builtins, not a function: postgresql prepares a
-- trigger's condition for every statement, and would parse an inlined sql function each time.
create or replace function statgate.watch_wanted_sql(claim text) returns text
language sql immutable as $$
  select format('current_setting(%1$L, true) is distinct from %2$L or set_config(%1$L, %3$L, true) is null',
    'statgate.claim', claim, '')
$$;

create or replace function statgate.drop_watch_triggers(tbl regclass) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  execute format('drop trigger if exists statgate_watch_ins on %s', tbl);
  execute format('drop trigger if exists statgate_watch_upd on %s', tbl);
  execute format('drop trigger if exists statgate_watch_del on %s', tbl);
  execute format('drop trigger if exists statgate_watch_row on %s', tbl);
end;
$$;

-- (re)generates the trigger function of a watched table for the current feed mode, from its
-- row in statgate.watches; with `triggers`, also drops its watch triggers and creates them
-- again (none in mode 'wal'). security definer: the functions are always the owner's, whoever
-- watches, so that a mode change (statgate.apply_feed_mode) may replace them; nobody but the
-- owner may call it.
create or replace function statgate.install_watch(watched regclass, triggers boolean) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  w statgate.watches;
  mode text := (select feed_mode from statgate.settings);
  fn_name text := format('statgate.%I', 'watch_' || watched::oid);
  partitioned boolean := (select relkind from pg_class where oid = watched) = 'p';
  counted boolean := exists (select 1 from statgate.counters c where c.stats = watched and c.kind = 'counter');
  args text;
begin
  select * into strict w from statgate.watches where tbl = watched;
  if w.fn is not null and w.fn::text <> fn_name || '()' and to_regprocedure(w.fn::text) is not null then
    -- generated under another oid of the same table (a dump restored): replaced by this one.
    perform statgate.drop_watch_triggers(watched);
    execute format('drop function %s', w.fn);
    triggers := true;
  end if;
  execute format('create or replace function %s() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as %L', fn_name,
    case when mode = 'wal' then E'\nbegin\n  return null; -- mode wal: no trigger runs this\nend\n'
         when partitioned then statgate.watch_row_body(w.columns, mode)
         else statgate.watch_statement_body(w.columns, mode) end);
  execute format('revoke execute on function %s() from public', fn_name);
  update statgate.watches set fn = (fn_name || '()')::regprocedure, generated_for = mode where tbl = watched;
  if not triggers then
    return;
  end if;
  perform statgate.drop_watch_triggers(watched);
  if mode = 'wal' then
    return;
  end if;
  select string_agg(quote_literal(c), ', ' order by i) into args from unnest(w.columns) with ordinality as u(c, i);
  if partitioned then
    select quote_literal(n.nspname) || ', ' || quote_literal(c.relname) || ', ' || args into args
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = watched;
    execute format('create trigger statgate_watch_row after insert or update or delete on %s for each row execute function %s(%s)', watched, fn_name, args);
    return;
  end if;
  execute format('create trigger statgate_watch_ins after insert on %s referencing new table as new_rows for each statement execute function %s(%s)', watched, fn_name, args);
  execute format('create trigger statgate_watch_upd after update on %s referencing old table as old_rows new table as new_rows for each statement %s execute function %s(%s)',
    watched, case when counted then format('when (%s)', statgate.watch_wanted_sql(statgate.claim_of(watched, w.columns))) else '' end, fn_name, args);
  execute format('create trigger statgate_watch_del after delete on %s referencing old table as old_rows for each statement execute function %s(%s)', watched, fn_name, args);
end;
$$;

-- re-generates the trigger functions of the counters kept in `stats` (they send their own
-- changes only while their stats table is watched, with its columns), not their triggers; one
-- that this role cannot re-install keeps its function, with a warning.
create or replace function statgate.reinstall_counters_of(stats regclass) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  c statgate.counters;
begin
  for c in select * from statgate.counters k where k.stats = reinstall_counters_of.stats and k.kind = 'counter'
           and to_regprocedure(statgate.counter_function(k.name) || '()') is not null loop
    begin
      perform statgate.install_counter_function(c);
    exception when others then
      raise warning 'statgate: counter % keeps its previous function; run select statgate.reinstall_counter(%) as its owner: %',
        c.name, quote_literal(c.name), sqlerrm;
    end;
  end loop;
end;
$$;

-- watch: records the table and its columns, generates its trigger function and installs its
-- triggers (idempotently; calling it again replaces the column list). the trigger arguments
-- still carry the columns, for `statgate check`.
create or replace function statgate.watch(tbl regclass, cols text[]) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  col text;
begin
  if cols is null or array_length(cols, 1) is null then
    raise exception 'statgate.watch(%): name at least one column', tbl;
  end if;
  foreach col in array cols loop
    if not exists (select 1 from pg_attribute where attrelid = tbl and attname = col and attnum > 0 and not attisdropped) then
      raise exception 'statgate.watch(%): no column %', tbl, col;
    end if;
  end loop;
  insert into statgate.watches as w (tbl, columns) values (tbl, cols)
  on conflict on constraint watches_pkey do update set columns = excluded.columns;
  perform statgate.install_watch(tbl, true);
  perform statgate.reinstall_counters_of(tbl);
end;
$$;

-- unwatch: drops the triggers, the generated function and the table's row in statgate.watches.
create or replace function statgate.unwatch(tbl regclass) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  generated regprocedure;
begin
  perform statgate.drop_watch_triggers(tbl);
  delete from statgate.watches w where w.tbl = unwatch.tbl returning w.fn into generated;
  if generated is not null and to_regprocedure(generated::text) is not null then
    execute format('drop function %s', generated);
  end if;
  perform statgate.reinstall_counters_of(tbl);
end;
$$;

-- brings what sends changes in line with the current feed mode: statgate.send_change, and
-- every watch whose function was generated for another mode (its function only, between
-- 'notify' and 'table': no lock on the watched table; its triggers too, to or from 'wal').
-- security definer, so a gateway that may only set the mode (docs/RELIABILITY.md,
-- "Privileges") has the functions replaced by their owner; it only ever makes them agree with
-- statgate.settings, so anyone may call it. rows of tables that no longer exist are removed.
create or replace function statgate.apply_feed_mode() returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  mode text;
  w statgate.watches;
begin
  -- one at a time: concurrent callers would replace the same functions.
  select feed_mode into mode from statgate.settings for update;
  if statgate.send_change_mode() is distinct from mode then
    perform statgate.install_send_change(mode);
  end if;
  for w in select * from statgate.watches where generated_for is distinct from mode order by tbl loop
    if not exists (select 1 from pg_class where oid = w.tbl) then
      delete from statgate.watches where tbl = w.tbl;
      if w.fn is not null and to_regprocedure(w.fn::text) is not null then
        execute format('drop function %s', w.fn);
      end if;
      continue;
    end if;
    perform statgate.install_watch(w.tbl, w.generated_for is null or (w.generated_for = 'wal') <> (mode = 'wal'));
  end loop;
end;
$$;

create or replace function statgate.set_feed_mode(mode text) returns text
language plpgsql as $$
declare
  previous text;
begin
  if mode is null or mode not in ('notify', 'table', 'wal') then
    raise exception 'statgate.set_feed_mode: mode must be ''notify'', ''table'' or ''wal'', got %', mode;
  end if;
  select feed_mode into previous from statgate.settings for update;
  insert into statgate.settings (only_row, feed_mode) values (true, mode)
    on conflict (only_row) do update set feed_mode = excluded.feed_mode;
  perform statgate.apply_feed_mode();
  return previous;
end;
$$;

revoke execute on function statgate.emit_parts(text, text, text, jsonb, text, int, bigint) from public;
revoke execute on function statgate.install_watch(regclass, boolean) from public;
revoke execute on function statgate.install_send_change(text) from public;

-- declared counters: a write in place ----------------------------------------------------------

-- the plpgsql a counter's trigger runs first for an insert or a delete (op), over `relation`
-- (new_rows or old_rows, named by the with-list `relations` in a row-level trigger): one update
-- of the one group all the counted rows fall in, by their count and sums. it finds nothing when
-- the rows fall in several groups, none is counted (filter, null key) or the group has no row
-- yet: then `otherwise` runs, the set-based statements, exact in every case. a delete that
-- empties its group removes it. when the stats table is watched on key columns only, the update
-- builds the payload its watch would send and, when that fits in one notification, claims the
-- statement (statgate.watch_wanted_sql) and the trigger sends it; a larger one is left to the
-- watch, which splits it. "all in one group": min = max of each key column, or, for a key type
-- without min and max, a statement of one row.
create or replace function statgate.counter_in_place(c statgate.counters, op text, relations text, otherwise text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  stats text := statgate.qualified(c.stats);
  relation text := case op when 'DELETE' then 'old_rows' else 'new_rows' end;
  sign text := case op when 'DELETE' then '-' else '+' end;
  row_filter text := statgate.sql_list(c.group_by, '%1$I is not null', ' and ') || coalesce(' and (' || c.filter || ')', '');
  sum_names text[] := array(select 'sum_' || s from unnest(c.sums) with ordinality as u(s, i) order by i);
  watched text[] := (select w.columns from statgate.watches w where w.tbl = c.stats);
  self_sent boolean;
  by_extremes boolean := true;
  col text;
  one_group text;
  payload text;
begin
  foreach col in array c.group_by loop
    begin
      execute format('select min(%1$I) = max(%1$I) from %2$s where false', col, c.source);
    exception when others then
      by_extremes := false;
    end;
  end loop;
  if by_extremes then
    one_group := format('select %s, count(*) as statgate_count%s from %s where %s having %s',
      statgate.sql_list(c.group_by, 'min(%1$I) as %1$I'),
      statgate.sql_list(c.sums, ', coalesce(sum(%1$I), 0) as %2$I', '', 'statgate_'), relation, row_filter,
      statgate.sql_list(c.group_by, 'min(%1$I) = max(%1$I)', ' and '));
  else
    one_group := format('select %s, 1 as statgate_count%s from %s where %s and (select count(*) from (select from %s limit 2) n) = 1',
      statgate.sql_list(c.group_by, '%1$I'), statgate.sql_list(c.sums, ', coalesce(%1$I, 0) as %2$I', '', 'statgate_'),
      relation, row_filter, relation);
  end if;
  self_sent := watched is not null and watched <@ c.group_by
    and (select relkind from pg_class where oid = c.stats) = 'r'
    and has_function_privilege('statgate.send_change(text)', 'execute');
  if self_sent then
    -- the payload the watch sends for this update: the keys do not change, so each watched
    -- column has one value. one format() call: the rest of its text, names included, is fixed
    -- (a % in a name doubled for format).
    select format('format(%L, (date_part(%L, clock_timestamp()) * 1000000)::bigint%s)',
             '{"v": 1, "at": %s, "op": "UPDATE", "rows": {'
               || string_agg(replace(to_json(w)::text, '%', '%%') || ': [%s]', ', ' order by octet_length(w), w::bytea)
               || '}, "table": ' || replace(to_json(r.relname::text)::text, '%', '%%')
               || ', "schema": ' || replace(to_json(n.nspname::text)::text, '%', '%%') || '}',
             'epoch', string_agg(format(', to_jsonb(t.%I)', w), '' order by octet_length(w), w::bytea))
    into payload
    from (select distinct w from unnest(watched) w) u, pg_class r join pg_namespace n on n.oid = r.relnamespace
    where r.oid = c.stats
    group by r.relname, n.nspname;
  end if;
  return format($b$%1$supdate %2$s t set count = t.count %3$s d.statgate_count%4$s
      from (%5$s) d where %6$s
      returning t.count%7$s into statgate_left%8$s;
    if statgate_left is null then
    %9$s
    else%10$s
      if statgate_left = 0 then
        %1$sdelete from %2$s t where t.count = 0 and (%11$s) in (select %12$s from %13$s where %14$s);
      end if;
    end if;$b$,
    coalesce(relations || ' ', ''), stats, sign,
    coalesce((select string_agg(format(', %1$I = t.%1$I %2$s d.%3$I', s, sign, 'statgate_' || x), '' order by i)
              from unnest(c.sums, sum_names) with ordinality as u(x, s, i)), ''),
    one_group, statgate.sql_list(c.group_by, 't.%1$I = d.%1$I', ' and '),
    case when self_sent then format(', %1$s, set_config(%2$L, case when octet_length(%1$s) <= 7900 then %3$L else %4$L end, true)',
                               payload, 'statgate.claim', statgate.claim_of(c.stats, watched), '') else '' end,
    case when self_sent then ', statgate_payload, statgate_claim' else '' end,
    otherwise,
    case when self_sent then $s$
      if statgate_claim <> '' then
        perform statgate.send_change(statgate_payload);
      end if;$s$ else '' end,
    statgate.sql_list(c.group_by, 't.%1$I'), statgate.sql_list(c.group_by, '%1$I'), relation, row_filter);
end;
$$;

-- the plpgsql of an update of a counter's source: a statement of one row (`single`: checked,
-- its transition tables may hold more; otherwise the trigger is row-level and `relations` names
-- its row) applies its net delta, at most two groups, group by group in key order (the order
-- the set-based upsert locks them in): in place, or by an upsert when the group had no row,
-- and removes a group it empties; a row whose counted values did not change costs no stats
-- statement at all. anything else runs `otherwise`.
create or replace function statgate.counter_update_row(c statgate.counters, single boolean, relations text, otherwise text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  stats text := statgate.qualified(c.stats);
  keys text := statgate.sql_list(c.group_by, '%1$I');
  sum_names text[] := array(select 'sum_' || s from unnest(c.sums) with ordinality as u(s, i) order by i);
  row_filter text := statgate.sql_list(c.group_by, '%1$I is not null', ' and ') || coalesce(' and (' || c.filter || ')', '');
  plus text := format('select %s, count(*) as count%s from new_rows where ', keys,
    statgate.sql_list(c.sums, ', coalesce(sum(%1$I), 0) as %2$I', '', 'sum_')) || row_filter || ' group by ' || keys;
  minus text := format('select %s, -count(*) as count%s from old_rows where ', keys,
    statgate.sql_list(c.sums, ', -coalesce(sum(%1$I), 0) as %2$I', '', 'sum_')) || row_filter || ' group by ' || keys;
  net text := format('select %s, sum(count) as count%s from (', keys, statgate.sql_list(sum_names, ', sum(%1$I) as %1$I', ''))
    || plus || ' union all ' || minus
    || format(') u group by %s having sum(count) <> 0%s', keys, statgate.sql_list(sum_names, ' or sum(%1$I) <> 0', ''));
  group_match text := statgate.sql_list(c.group_by, 't.%1$I = statgate_delta.%1$I', ' and ');
begin
  return format($b$if %1$s then
    for statgate_delta in %2$s%3$s order by %4$s loop
      update %5$s t set count = t.count + statgate_delta.count%6$s where %7$s returning t.count into statgate_left;
      if statgate_left is null then
        insert into %5$s as t (%4$s, count%8$s) values (%9$s, statgate_delta.count%10$s)
        on conflict (%4$s) do update set count = t.count + excluded.count%11$s
        returning t.count into statgate_left;
      end if;
      if statgate_left = 0 then
        delete from %5$s t where %7$s and t.count = 0;
      end if;
    end loop;
    else
    %12$s
    end if;$b$,
    case when single then '(select count(*) from (select from new_rows limit 2) n) = 1' else 'true' end,
    coalesce(relations || ' ', ''), net, keys, stats,
    statgate.sql_list(sum_names, ', %1$I = t.%1$I + statgate_delta.%1$I', ''), group_match,
    statgate.sql_list(sum_names, ', %1$I', ''), statgate.sql_list(c.group_by, 'statgate_delta.%1$I'),
    statgate.sql_list(sum_names, ', statgate_delta.%1$I', ''),
    statgate.sql_list(sum_names, ', %1$I = t.%1$I + excluded.%1$I', ''),
    coalesce(otherwise, 'null;'));
end;
$$;

-- (re)creates a counter's trigger function, as install_counter did in 0007; a counter (not a
-- rollup) first tries statgate.counter_in_place for an insert or a delete and
-- statgate.counter_update_row for an update, on a plain source and in a partitioned source's
-- row-level trigger alike.
create or replace function statgate.install_counter_function(c statgate.counters) returns void
language plpgsql as $$
declare
  fn text := statgate.counter_function(c.name);
  stats text := statgate.qualified(c.stats);
  s record := statgate.delta_statements(c);
  counter boolean := c.kind = 'counter';
  body text;
begin
  if (select relkind from pg_class where oid = c.source) = 'p' then
    body := format($b$
  if tg_op = 'TRUNCATE' then
    if tg_relid = %1$s then
      delete from %2$s;
    elsif not exists (select 1 from pg_partition_tree(%1$s::oid::regclass) p where p.relid = tg_relid) then
      null; -- a partition detached since: its rows left the source then
    elsif tg_when = 'BEFORE' then
    %3$s
    else
    %4$s
    end if;
  elsif tg_op = 'INSERT' then
    %5$s
  elsif tg_op = 'DELETE' then
    %6$s
  else
    %7$s
  end if;$b$,
      c.source::oid, stats,
      coalesce((select string_agg(format('execute %L || tg_relid::regclass::text || %L || %L;',
                  'with old_rows as (select * from ', ') ', st), E'\n    ' order by i)
                from unnest(s.on_leaf_truncate) with ordinality as u(st, i)), 'null;'),
      statgate.plpgsql_block(s.after_leaf_truncate, null),
      case when counter then statgate.counter_in_place(c, 'INSERT', 'with new_rows as (select new.*)',
                               statgate.plpgsql_block(s.on_insert, 'with new_rows as (select new.*)'))
           else statgate.plpgsql_block(s.on_insert, 'with new_rows as (select new.*)') end,
      case when counter then statgate.counter_in_place(c, 'DELETE', 'with old_rows as (select old.*)',
                               statgate.plpgsql_block(s.on_delete, 'with old_rows as (select old.*)'))
           else statgate.plpgsql_block(s.on_delete, 'with old_rows as (select old.*)') end,
      case when counter then statgate.counter_update_row(c, false, 'with old_rows as (select old.*), new_rows as (select new.*)', null)
           else statgate.plpgsql_block(s.on_update, 'with old_rows as (select old.*), new_rows as (select new.*)') end);
  elsif counter then
    body := format($b$
  if tg_op = 'INSERT' then
    %1$s
  elsif tg_op = 'DELETE' then
    %2$s
  elsif tg_op = 'UPDATE' then
    %3$s
  else
    delete from %4$s;
  end if;$b$,
      statgate.counter_in_place(c, 'INSERT', null, statgate.plpgsql_block(s.on_insert, null)),
      statgate.counter_in_place(c, 'DELETE', null, statgate.plpgsql_block(s.on_delete, null)),
      statgate.counter_update_row(c, true, null, statgate.plpgsql_block(s.on_update, null)), stats);
  else
    body := format($b$
  if tg_op = 'INSERT' then
    %1$s
  elsif tg_op = 'DELETE' then
    %2$s
  elsif tg_op = 'UPDATE' then
    %3$s
  else
    delete from %4$s;
  end if;$b$,
      statgate.plpgsql_block(s.on_insert, null), statgate.plpgsql_block(s.on_delete, null),
      statgate.plpgsql_block(s.on_update, null), stats);
  end if;
  execute format($f$
create or replace function %1$s() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $body$
declare
  statgate_delta record;
  statgate_left bigint;
  statgate_payload text;
  statgate_claim text;
begin%2$s
  return null;
end
$body$
$f$, fn, body);
  execute format('revoke execute on function %s() from public', fn);
end;
$$;

-- as in 0007: the function, then the triggers (see 0007 for partitioned sources).
create or replace function statgate.install_counter(c statgate.counters) returns void
language plpgsql as $$
declare
  fn text := statgate.counter_function(c.name);
  base text := 'statgate_counter_' || c.name;
  leaf regclass;
begin
  perform statgate.install_counter_function(c);
  perform statgate.remove_counter_triggers(c.name, c.source);
  if (select relkind from pg_class where oid = c.source) = 'p' then
    execute format('create trigger %I after insert or update or delete on %s for each row execute function %s()', base || '_row', c.source, fn);
    execute format('create trigger %I after truncate on %s for each statement execute function %s()', base || '_trunc', c.source, fn);
    for leaf in select relid from pg_partition_tree(c.source) where isleaf loop
      execute format('create trigger %I before truncate on %s for each statement execute function %s()', base || '_ltb', leaf, fn);
      execute format('create trigger %I after truncate on %s for each statement execute function %s()', base || '_lta', leaf, fn);
    end loop;
  else
    execute format('create trigger %I after insert on %s referencing new table as new_rows for each statement execute function %s()', base || '_ins', c.source, fn);
    execute format('create trigger %I after update on %s referencing old table as old_rows new table as new_rows for each statement execute function %s()', base || '_upd', c.source, fn);
    execute format('create trigger %I after delete on %s referencing old table as old_rows for each statement execute function %s()', base || '_del', c.source, fn);
    execute format('create trigger %I after truncate on %s for each statement execute function %s()', base || '_trunc', c.source, fn);
  end if;
end;
$$;

-- as in 0007, but the stats table is watched before the triggers are generated, so that they
-- send the changes they make in place themselves.
create or replace function statgate.define_counter(name text, source regclass, group_by text[],
  filter text default null, sums text[] default '{}') returns void
language plpgsql as $$
declare
  stats text := statgate.counter_table(name);
  col text;
  sum_names text[];
  sum_types text[] := '{}';
  key_types text[] := '{}';
begin
  sums := coalesce(sums, '{}');
  if group_by is null or cardinality(group_by) = 0 then
    raise exception 'statgate.define_counter(%): group_by needs at least one column', name;
  end if;
  foreach col in array group_by loop
    key_types := key_types || (statgate.column_type(source, col) || ' not null');
    if col = 'count' or col like 'sum\_%' then
      raise exception 'statgate.define_counter(%): a group_by column may not be called %', name, col;
    end if;
  end loop;
  foreach col in array sums loop
    sum_types := sum_types || (statgate.sum_type(source, col) || ' not null default 0');
  end loop;
  sum_names := array(select 'sum_' || s from unnest(sums) with ordinality as u(s, i) order by i);
  if filter is not null then
    perform statgate.check_filter(name, source, filter);
  end if;

  perform statgate.ensure_stats_table(stats, group_by || 'count'::text || sum_names,
    key_types || 'bigint not null default 0'::text || sum_types, group_by);
  insert into statgate.counters (name, kind, stats, source, group_by, filter, sums)
  values (name, 'counter', stats::regclass, source, group_by, filter, sums)
  on conflict on constraint counters_pkey do update
    set kind = excluded.kind, stats = excluded.stats, source = excluded.source, group_by = excluded.group_by,
        filter = excluded.filter, sums = excluded.sums, time_column = null, value_column = null,
        granularities = '{}', defined_at = now();

  perform statgate.watch(stats::regclass, group_by);
  perform statgate.install_counter(statgate.counter(name));
  perform statgate.refresh_counter(name);
end;
$$;

-- existing databases ------------------------------------------------------------------------

-- the registry, from the watch triggers statgate installed before (their arguments are the
-- columns; a partitioned table's row-level trigger has its schema and name first).
insert into statgate.watches (tbl, columns)
select tg.tgrelid::regclass,
       (array_remove(string_to_array(encode(tg.tgargs, 'escape'), '\000'), ''))[case when tg.tgname = 'statgate_watch_row' then 3 else 1 end:]
from pg_trigger tg
where tg.tgname in ('statgate_watch_ins', 'statgate_watch_row') and tg.tgparentid = 0
  and tg.tgfoid in ('statgate.notify_changes()'::regprocedure, 'statgate.notify_row_changes()'::regprocedure)
on conflict on constraint watches_pkey do nothing;

-- every watch and every declared counter gets the new functions. one this role cannot
-- re-install (another role owns the table, or the counter's function) keeps its triggers,
-- which still work, with a warning.
do $$
declare
  w statgate.watches;
  c statgate.counters;
begin
  for w in select * from statgate.watches where generated_for is null order by tbl loop
    begin
      perform statgate.install_watch(w.tbl, true);
    exception when others then
      raise warning 'statgate: the watch of % keeps its previous triggers; run select statgate.watch(%, %) as the table''s owner: %',
        w.tbl, quote_literal(w.tbl::text), quote_literal(w.columns::text), sqlerrm;
    end;
  end loop;
  for c in select * from statgate.counters order by name loop
    begin
      perform statgate.install_counter(c);
    exception when others then
      raise warning 'statgate: counter % keeps its previous triggers; run select statgate.reinstall_counter(%) as its owner: %',
        c.name, quote_literal(c.name), sqlerrm;
    end;
  end loop;
end;
$$;
