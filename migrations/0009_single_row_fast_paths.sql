-- a single-row write costs about what hand-written row triggers cost, a bulk statement keeps
-- its one set-based statement per counter (issue 18; docs/BENCHMARKS.md, "Writer cost of a
-- single-row write"; docs/COUNTERS.md, "What a write costs").
--
-- where the time went after 0008, measured in instructions per single-row insert (callgrind of
-- a single-user backend: deterministic, unlike timings on a shared machine), over the ~200,000
-- of the insert alone: the hand-written baseline (one row-level update of post_stats and a
-- NOTIFY) adds ~92,000; the example's post_stats trigger with statgate's watch added ~251,000,
-- a declared counter with its watch ~253,000. the causes, largest first:
--   * executor start-up. every statement of a trigger builds its plan's state anew, and a plan
--     of many nodes costs in proportion: the one-group update of 0008 (aggregate over the
--     transition table, subquery scan, nested loop, index scan) started in ~46,000, the
--     watch's payload query (union of both transition tables, an aggregate with distinct and a
--     dozen text concatenations) in ~49,000. a scan of the transition table with a tiny
--     projection starts in a few thousand.
--   * the claim of 0008 (a when condition on the watch's update trigger): postgresql reads a
--     statement-level trigger's condition from the catalog and parses it for every statement,
--     ~60,000, more than the watch it skipped.
--   * the watch's exception block, a subtransaction per statement, and a second security
--     definer call with search_path pinned (~14,000 per call, mostly the guc save and restore).
--
-- now:
--   * a statement of one row takes a short path in both triggers, built from statements that
--     start cheaply: the counter reads the row's group, sums and filter into variables (a
--     scan of the transition table), checks there is no second row, and updates that group's
--     row by its delta; the watch sends the row's payload with one statement (format() over the
--     row, no aggregate) and no subtransaction in notify mode (pg_notify of a payload that fits
--     cannot fail). anything else (several rows, an update that moves a row between groups or
--     changes a watched column, a group without its row yet, a payload too large) takes the
--     set-based statements of 0007 and the payload query of 0008, unchanged: a 100,000-row
--     insert still costs one statement per counter and one notification per watched table.
--   * the claim is checked by the watch function itself, its first statement: a counter's
--     update in place still sends its own change, and the watch of its stats table skips that
--     one statement.
--   * the payload limits are named (statgate.payload_max_bytes and the two below it).
--   * in feed mode 'wal' no counter sends changes (there is no watch trigger to tell), and a
--     mode change to or from 'wal' regenerates the counters of watched stats tables.
-- the payloads are the same text as before (a single value of a row, its key column's value).

-- the payload limits ---------------------------------------------------------------------------

-- the largest payload statgate sends in one notification, in bytes. pg_notify refuses 8,000
-- bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH: an 8 kB queue page less the channel name and the
-- entry's header); 100 bytes stay free so the limit holds whatever the server's build. a
-- larger payload is split (payload_part_bytes) or sent as an overflow. sql functions like these
-- are inlined where they are called, so they cost nothing at run time.
create or replace function statgate.payload_max_bytes() returns int
language sql immutable parallel safe as $$ select 7900 $$;

-- the size a too-large payload's values are cut to, per part: each part holds the values of
-- one column that fit in this many bytes at the statement's average value width, so a part of
-- wider than average values, with its head (schema, table, op, at), still fits under
-- payload_max_bytes.
create or replace function statgate.payload_part_bytes() returns int
language sql immutable parallel safe as $$ select 7000 $$;

-- the most parts one statement's payload is split into. past it one overflow (the gateway
-- resyncs every subscription on the table) is cheaper than more notifications, for the
-- gateway that matches each of them and for the notification queue they fill.
create or replace function statgate.payload_max_parts() returns int
language sql immutable parallel safe as $$ select 20 $$;

create or replace function statgate.install_send_change(mode text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  sent text := $s$case when pg_catalog.octet_length(change) operator(pg_catalog.<=) statgate.payload_max_bytes() then change
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

select statgate.install_send_change(feed_mode) from statgate.settings;

create or replace function statgate.emit_parts(of_schema text, of_table text, op text, rows_obj jsonb,
  col text, payload_bytes int, at_us bigint) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  head jsonb := jsonb_build_object('v', 1, 'schema', of_schema, 'table', of_table, 'op', op);
  vals jsonb := rows_obj -> col;
  n int := jsonb_array_length(vals);
  chunk_size int := greatest(1, (n * statgate.payload_part_bytes() / payload_bytes));
  part jsonb;
  payload text;
  i int := 0;
begin
  if n / chunk_size + 1 > statgate.payload_max_parts() then
    raise exception 'too many parts';
  end if;
  while i < n loop
    select jsonb_agg(e) into part
    from jsonb_array_elements(vals) with ordinality as t(e, k)
    where k > i and k <= i + chunk_size;
    payload := (head || jsonb_build_object('rows', jsonb_build_object(col, part), 'at', at_us))::text;
    if octet_length(payload) > statgate.payload_max_bytes() then
      raise exception 'a single value is too large';
    end if;
    perform statgate.emit_change(payload);
    i := i + chunk_size;
  end loop;
end;
$$;
revoke execute on function statgate.emit_parts(text, text, text, jsonb, text, int, bigint) from public;

-- payload text ------------------------------------------------------------------------------

-- the order jsonb prints an object's keys in: shorter first, then bytewise.
create or replace function statgate.rows_sql(cols text[], value text) returns text
language sql immutable as $$
  select '''{'' || ' || string_agg(format('%L || ', to_json(c)::text || ': ') || format(value, c),
                                   ' || '', '' || ' order by octet_length(c), convert_to(c, 'UTF8')) || ' || ''}'''
  from (select distinct c from unnest(cols) c) u
$$;

-- how a watch's short path renders and compares one row's watched column `col`: `value` the
-- sql of its json text in a payload (%1$s the row's alias; an integer not null as itself, the
-- rest through to_jsonb, null as null), `same` whether an update left it as it was (o the old
-- row, n the new one), `bounded` whether its json text has a bounded width. a column of a
-- fixed-width built-in type (typlen > 0: integers, uuid, timestamps, ...) compares with its own
-- equality; any other as jsonb, as the payload query's distinct does (text under a
-- nondeterministic collation may be equal and differ). every function is qualified: the sql
-- runs in a notify-mode watch, with the writer's search_path (statgate.watch_notify_body).
create or replace function statgate.watched_column_sql(tbl regclass, col text,
  out value text, out same text, out bounded boolean)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  fixed boolean;
  integral boolean;
  not_null boolean;
begin
  select t.typnamespace = 'pg_catalog'::regnamespace and t.typlen > 0, t.oid in ('int2'::regtype, 'int4'::regtype, 'int8'::regtype), a.attnotnull
    into strict fixed, integral, not_null
  from pg_attribute a join pg_type t on t.oid = a.atttypid
  where a.attrelid = tbl and a.attname = col and a.attnum > 0 and not a.attisdropped;
  if fixed then
    begin
      execute format('select %1$I = %1$I from %2$s where false', col, tbl);
    exception when others then
      fixed := false; -- a type without equality
    end;
  end if;
  bounded := fixed;
  value := case
    when integral and not_null then format('%%1$s.%I', col)
    when integral then format('coalesce(%%1$s.%I::pg_catalog.text, ''null'')', col)
    when not_null then format('pg_catalog.to_jsonb(%%1$s.%I)', col)
    else format('coalesce(pg_catalog.to_jsonb(%%1$s.%I)::pg_catalog.text, ''null'')', col) end;
  same := case
    when fixed and not_null then format('o.%1$I = n.%1$I', col)
    when fixed then format('o.%1$I is not distinct from n.%1$I', col)
    else format('pg_catalog.to_jsonb(o.%1$I) is not distinct from pg_catalog.to_jsonb(n.%1$I)', col) end;
end;
$$;

-- the sql of a payload's time, "at" (microseconds since the epoch).
create or replace function statgate.at_sql() returns text
language sql immutable as $$
  select '(pg_catalog.date_part(''epoch'', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint'
$$;

-- the watches --------------------------------------------------------------------------------

-- the short path of a watch trigger for `op`: a statement of one row (for an update, one that
-- left the watched columns as they were) has its payload formatted from the row by one
-- statement, whose head is `pick` (%s the payload: a perform of pg_notify, which sends it, or
-- a select into a variable); FOUND tells then whether there was such a row. one format() call
-- builds the payload, the same text the payload query prints for one row. when every watched
-- column is bounded (at most 8 of them) the payload cannot reach payload_max_bytes and its size
-- goes unchecked, which spares a subquery.
create or replace function statgate.watch_one_row_sql(tbl regclass, cols text[], op text, pick text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  rel text := case op when 'DELETE' then 'old_rows' else 'new_rows' end;
  fmt text;
  vals text;
  same text;
  bounded boolean;
  conds text;
  payload text;
begin
  select '{"v": 1, "at": %s, "op": ' || to_json(op)::text || ', "rows": {'
           || string_agg(replace(to_json(c)::text, '%', '%%') || ': [%s]', ', ' order by octet_length(c), convert_to(c, 'UTF8'))
           || '}, "table": %s, "schema": %s}',
         string_agg(format(f.value, 'n'), ', ' order by octet_length(c), convert_to(c, 'UTF8')),
         string_agg(f.same, ' and ' order by c),
         count(*) <= 8 and bool_and(f.bounded)
    into fmt, vals, same, bounded
  from (select distinct c from unnest(cols) c) u, statgate.watched_column_sql(tbl, c) f;
  payload := format('pg_catalog.format(%L, %s, %s, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema))',
    fmt, statgate.at_sql(), vals);
  conds := format('not exists (select from %s offset 1)', rel)
    || case when op = 'UPDATE' then format(E'\n      and exists (select from old_rows o where %s)', same) else '' end;
  if bounded then
    return format(pick, payload) || format(E'\n    from %s n where %s', rel, conds);
  end if;
  return format(pick, 'statgate_p')
    || format(E' from (select %s as statgate_p\n      from %s n where %s) statgate_s\n    where pg_catalog.octet_length(statgate_p) <= %s /* statgate.payload_max_bytes() */',
         payload, rel, conds, statgate.payload_max_bytes());
end;
$$;

-- the check a counted stats table's watch makes first (`claim`: statgate.watch_claim): an update
-- a counter made in place, whose change the counter sent itself, is not sent again.
create or replace function statgate.claim_check_sql(claim text) returns text
language sql immutable as $$
  -- one expression: the claim is cleared as it is found, so it never covers another statement
  select case when claim is null then '' else format($c$
    if pg_catalog.current_setting('statgate.claim', true) = %L and pg_catalog.set_config('statgate.claim', '', true) = '' then
      return null; -- a counter's update in place, whose change the counter sent itself
    end if;$c$, claim) end
$$;

-- the body of the trigger function of a watched plain table in feed mode 'notify'. it sends
-- with pg_notify, which needs no rights, so it runs as the writer (security invoker, no
-- search_path of its own: pinning one cost a definer function ~14,000 instructions per call)
-- and names nothing in schema statgate (a writer may have no usage on it): every function is
-- qualified with pg_catalog, every operator has operands of one type (an exact match, which
-- pg_catalog, searched first, always holds), the payload limits are inlined with their names.
-- a statement of one row takes the short path (statgate.watch_one_row_sql); any other gets one
-- payload of every distinct value of the watched columns, split by the first one when too large
-- (as statgate.emit_parts does), or an overflow.
create or replace function statgate.watch_notify_body(tbl regclass, cols text[], claim text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  send text := $s$perform pg_catalog.pg_notify('statgate_changes', %s)$s$;
  generic text;
begin
  select format('pg_catalog.format(%L, %s, pg_catalog.to_json(tg_op), %s, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)), pg_catalog.count(*)',
           '{"v": 1, "at": %s, "op": %s, "rows": {'
             || string_agg(replace(to_json(c)::text, '%', '%%') || ': %s', ', ' order by octet_length(c), convert_to(c, 'UTF8'))
             || '}, "table": %s, "schema": %s}',
           statgate.at_sql(),
           string_agg(format('pg_catalog.jsonb_agg(distinct pg_catalog.to_jsonb(%I))', c), ', ' order by octet_length(c), convert_to(c, 'UTF8')))
    into generic
  from (select distinct c from unnest(cols) c) u;
  return format($b$
declare
  statgate_payload text;
  statgate_n int;
  statgate_at jsonb;
  statgate_vals jsonb;
  statgate_size int;
  statgate_i int;
begin
  if tg_op = 'UPDATE' then%1$s
    %2$s;
  elsif tg_op = 'INSERT' then
    %3$s;
  else
    %4$s;
  end if;
  if found then
    return null;
  end if;
  -- any other statement: every distinct value of the watched columns in one payload
  begin
    if tg_op = 'INSERT' then
      select %5$s into statgate_payload, statgate_n from new_rows;
    elsif tg_op = 'DELETE' then
      select %5$s into statgate_payload, statgate_n from old_rows;
    else
      select %5$s into statgate_payload, statgate_n
      from (select %6$s from new_rows union all select %6$s from old_rows) statgate_s;
    end if;
    if statgate_n = 0 then
      return null; -- the statement touched no rows: nothing to say
    end if;
    if pg_catalog.octet_length(statgate_payload) <= %7$s then -- statgate.payload_max_bytes()
      perform pg_catalog.pg_notify('statgate_changes', statgate_payload);
      return null;
    end if;
    -- too large for one notification: the values of %8$s in parts of about %9$s bytes
    -- (statgate.payload_part_bytes()), at most %10$s of them (statgate.payload_max_parts()); the
    -- other columns are left out, which only widens what the parts match
    statgate_at := pg_catalog.jsonb_extract_path(statgate_payload::pg_catalog.jsonb, 'at');
    statgate_vals := pg_catalog.jsonb_extract_path(statgate_payload::pg_catalog.jsonb, 'rows', %8$L);
    statgate_n := pg_catalog.jsonb_array_length(statgate_vals);
    statgate_size := greatest(1, statgate_n * %9$s / pg_catalog.octet_length(statgate_payload));
    if statgate_n / statgate_size + 1 > %10$s then
      raise exception 'too many parts';
    end if;
    statgate_i := 0;
    while statgate_i < statgate_n loop
      statgate_payload := pg_catalog.jsonb_build_object('v', 1, 'schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op,
        'rows', pg_catalog.jsonb_build_object(%8$L, (select pg_catalog.jsonb_agg(e)
                  from pg_catalog.jsonb_array_elements(statgate_vals) with ordinality as t(e, k)
                  where k > statgate_i and k <= statgate_i + statgate_size)),
        'at', statgate_at)::pg_catalog.text;
      if pg_catalog.octet_length(statgate_payload) > %7$s then
        raise exception 'a single value is too large';
      end if;
      perform pg_catalog.pg_notify('statgate_changes', statgate_payload);
      statgate_i := statgate_i + statgate_size;
    end loop;
  exception when others then
    -- not in one notification, nor in parts: an overflow (the gateway resyncs the table)
    begin
      perform pg_catalog.pg_notify('statgate_changes', pg_catalog.jsonb_build_object('v', 1, 'schema', tg_table_schema,
        'table', tg_table_name, 'op', tg_op, 'overflow', true, 'at', %11$s)::pg_catalog.text);
    exception when others then
      raise warning 'statgate: could not send a change of %%.%%: %%', tg_table_schema, tg_table_name, sqlerrm;
    end;
  end;
  return null;
end
$b$,
    statgate.claim_check_sql(claim),
    statgate.watch_one_row_sql(tbl, cols, 'UPDATE', send),
    statgate.watch_one_row_sql(tbl, cols, 'INSERT', send),
    statgate.watch_one_row_sql(tbl, cols, 'DELETE', send),
    generic,
    statgate.sql_list(cols, '%1$I'),
    statgate.payload_max_bytes(), cols[1], statgate.payload_part_bytes(), statgate.payload_max_parts(),
    statgate.at_sql());
end;
$$;

-- the body of the trigger function of a watched plain table in feed mode 'table': security
-- definer (it appends to statgate.changes), with the short path of one row inside the block
-- whose failure is counted (an insert may fail), then the payload query of 0008.
create or replace function statgate.watch_statement_body(tbl regclass, cols text[], mode text, claim text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  pick text := 'select %s into statgate_payload';
begin
  return format($b$
declare
  statgate_payload text;
begin
  if tg_op = 'UPDATE' then%6$s
    null;
  end if;
  begin
    if tg_op = 'UPDATE' then
      %7$s;
    elsif tg_op = 'INSERT' then
      %8$s;
    else
      %9$s;
    end if;
    if found then
      %3$s;
      return null;
    end if;
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
    if octet_length(statgate_payload) <= statgate.payload_max_bytes() then
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
        'at', (date_part('epoch', clock_timestamp()) * 1000000)::bigint)::text$e$),
    statgate.claim_check_sql(claim),
    replace(statgate.watch_one_row_sql(tbl, cols, 'UPDATE', pick), E'\n', E'\n  '),
    replace(statgate.watch_one_row_sql(tbl, cols, 'INSERT', pick), E'\n', E'\n  '),
    replace(statgate.watch_one_row_sql(tbl, cols, 'DELETE', pick), E'\n', E'\n  '));
end;
$$;
drop function if exists statgate.watch_statement_body(text[], text);

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
    if octet_length(statgate_payload) > statgate.payload_max_bytes() then
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

-- the claim of a watched stats table, if a declared counter keeps it.
create or replace function statgate.watch_claim(watched regclass) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select statgate.claim_of(w.tbl, w.columns) from statgate.watches w
  where w.tbl = watched and exists (select 1 from statgate.counters c where c.stats = watched and c.kind = 'counter')
$$;

-- as in 0008, with the claim checked by the function instead of a condition on its update
-- trigger.
create or replace function statgate.install_watch(watched regclass, triggers boolean) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  w statgate.watches;
  mode text := (select feed_mode from statgate.settings);
  fn_name text := format('statgate.%I', 'watch_' || watched::oid);
  partitioned boolean := (select relkind from pg_class where oid = watched) = 'p';
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
language plpgsql%s as %L', fn_name,
    case when mode = 'notify' and not partitioned then '' else ' security definer set search_path = pg_catalog, pg_temp' end,
    case when mode = 'wal' then E'\nbegin\n  return null; -- mode wal: no trigger runs this\nend\n'
         when partitioned then statgate.watch_row_body(w.columns, mode)
         when mode = 'notify' then statgate.watch_notify_body(watched, w.columns, statgate.watch_claim(watched))
         else statgate.watch_statement_body(watched, w.columns, mode, statgate.watch_claim(watched)) end);
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
  execute format('create trigger statgate_watch_upd after update on %s referencing old table as old_rows new table as new_rows for each statement execute function %s(%s)', watched, fn_name, args);
  execute format('create trigger statgate_watch_del after delete on %s referencing old table as old_rows for each statement execute function %s(%s)', watched, fn_name, args);
end;
$$;
revoke execute on function statgate.install_watch(regclass, boolean) from public;
drop function if exists statgate.watch_wanted_sql(text);

-- as in 0008; a mode change also regenerates the counters of the watched tables: a counter
-- sends its own changes the way of the mode (pg_notify, statgate.send_change), none in 'wal'.
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
    perform statgate.reinstall_counters_of(w.tbl);
  end loop;
end;
$$;

-- declared counters: one row in place ----------------------------------------------------------

-- the body of a declared counter's trigger function (kind 'counter'; rollups keep the
-- set-based statements only). a statement of one row (a row-level trigger's row, on a
-- partitioned source) is applied to its group's row in place (`on_truncate`: the plpgsql of a
-- truncate):
--   * its group (statgate_k<i>), the values it adds to the sums (statgate_s<i>) and whether it
--     is counted (statgate_in: keys not null, filter true) are read into variables; an update
--     reads the old row's too (statgate_ok<i>, statgate_os<i>, statgate_oin);
--   * the delta: +1 for an insert, -1 for a delete; for an update, the change of the sums when
--     the row stays in its group (nothing to do when they do not change), -1 or +1 when it
--     leaves or joins the count; a row that moves to another group takes the set-based path;
--   * one update of that group's row (count and sums), whose change the counter sends itself
--     when its stats table is watched on key columns only (the claim; statgate.watch_claim);
--     a group emptied by a delete is removed. a group without its row yet, and every other
--     statement, take the set-based statements of 0007: exact in every case.
create or replace function statgate.counter_body(c statgate.counters, partitioned boolean, on_truncate text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  stats text := statgate.qualified(c.stats);
  s record := statgate.delta_statements(c);
  watched text[] := (select w.columns from statgate.watches w where w.tbl = c.stats);
  mode text := (select feed_mode from statgate.settings);
  new_relations text := case when partitioned then 'with new_rows as (select new.*)' end;
  old_relations text := case when partitioned then 'with old_rows as (select old.*)' end;
  both_relations text := case when partitioned then 'with old_rows as (select old.*), new_rows as (select new.*)' end;
  new_rel text := case when partitioned then '(select new.*) new_rows' else 'new_rows' end;
  old_rel text := case when partitioned then '(select old.*) old_rows' else 'old_rows' end;
  n_keys int := cardinality(c.group_by);
  n_sums int := cardinality(c.sums);
  counted text := '(' || statgate.sql_list(c.group_by, '%1$I is not null', ' and ') || coalesce(' and (' || c.filter || ')', '') || ')';
  k text := statgate.sql_list(array(select 'statgate_k' || i from generate_series(1, n_keys) i), '%1$s');
  ok text := statgate.sql_list(array(select 'statgate_ok' || i from generate_series(1, n_keys) i), '%1$s');
  sv text := statgate.sql_list(array(select 'statgate_s' || i from generate_series(1, n_sums) i), ', %1$s', '');
  osv text := statgate.sql_list(array(select 'statgate_os' || i from generate_series(1, n_sums) i), ', %1$s', '');
  plus_pick text := statgate.sql_list(c.group_by, '%1$I') || statgate.sql_list(c.sums, ', coalesce(%1$I, 0)', '')
    || ', coalesce(' || counted || ', false)';
  minus_pick text := statgate.sql_list(c.group_by, '%1$I') || statgate.sql_list(c.sums, ', -coalesce(%1$I, 0)', '')
    || ', coalesce(' || counted || ', false)';
  group_match text := (select string_agg(format('t.%I = statgate_k%s', g, i), ' and ' order by i)
                       from unnest(c.group_by) with ordinality as u(g, i));
  self_sent boolean;
  payload_format text;
  payload_values text;
  payload_var_values text;
  payload_bounded boolean;
  one_row_check_new text := '';
  one_row_check_old text := '';
  decls text;
  same_group text;
  apply text;
  generic_insert text := statgate.plpgsql_block(s.on_insert, new_relations);
  generic_delete text := statgate.plpgsql_block(s.on_delete, old_relations);
  generic_update text := statgate.plpgsql_block(s.on_update, both_relations);
begin
  self_sent := watched is not null and watched <@ c.group_by and mode <> 'wal'
    and (select relkind from pg_class where oid = c.stats) = 'r'
    and has_function_privilege('statgate.send_change(text)', 'execute');
  select string_agg(format(E'\n  statgate_k%1$s %2$s;\n  statgate_ok%1$s %2$s;', i, statgate.column_type(c.source, g)), '' order by i)
    into decls from unnest(c.group_by) with ordinality as u(g, i);
  select decls || coalesce(string_agg(format(E'\n  statgate_s%1$s %2$s;\n  statgate_os%1$s %2$s;', i, statgate.sum_type(c.source, x)), '' order by i), '')
    into decls from unnest(c.sums) with ordinality as u(x, i);
  if not partitioned then
    -- the template of a check that the statement has one row (%s: what runs when it has more)
    one_row_check_new := format($b$
    perform from %s offset 1;
    if found then
      %s
      return null;
    end if;$b$, 'new_rows', '%s');
    one_row_check_old := replace(one_row_check_new, 'from new_rows', 'from old_rows');
  end if;
  same_group := case when n_sums = 0 then $b$
      return null; -- the row stays in its group: no count changes$b$
    else format($b$%s
      if %s then
        return null; -- the row stays in its group with the same sums
      end if;
      statgate_dc := 0;$b$,
      (select string_agg(format(E'\n      statgate_s%1$s := statgate_s%1$s - statgate_os%1$s;', i), '' order by i) from generate_series(1, n_sums) i),
      (select string_agg(format('statgate_s%s = 0', i), ' and ' order by i) from generate_series(1, n_sums) i)) end;
  if self_sent then
    select '{"v": 1, "at": %s, "op": "UPDATE", "rows": {'
             || string_agg(replace(to_json(w)::text, '%', '%%') || ': [%s]', ', ' order by octet_length(w), convert_to(w, 'UTF8'))
             || '}, "table": ' || replace(to_json(r.relname::text)::text, '%', '%%')
             || ', "schema": ' || replace(to_json(n.nspname::text)::text, '%', '%%') || '}',
           string_agg(format(f.value, 't'), ', ' order by octet_length(w), convert_to(w, 'UTF8')),
           string_agg(format('to_jsonb(statgate_k%s)', array_position(c.group_by, w)), ', ' order by octet_length(w), convert_to(w, 'UTF8')),
           count(*) <= 8 and bool_and(f.bounded)
      into payload_format, payload_values, payload_var_values, payload_bounded
    from (select distinct w from unnest(watched) w) u
      cross join lateral statgate.watched_column_sql(c.stats, w) f,
      pg_class r join pg_namespace n on n.oid = r.relnamespace
    where r.oid = c.stats
    group by r.relname, n.nspname;
  end if;
  apply := format($b$
  -- the one group the statement changes, in place%5$s
  update %1$s t set count = t.count + statgate_dc%2$s where %3$s
    returning t.count%4$s;
  if found then
    if statgate_left = 0 then
      delete from %1$s t where %3$s and t.count = 0;
    end if;
    return null;
  end if;$b$,
    stats,
    (select coalesce(string_agg(format(', %1$I = t.%1$I + statgate_s%2$s', 'sum_' || x, i), '' order by i), '')
     from unnest(c.sums) with ordinality as u(x, i)),
    group_match,
    -- the change of the stats row, sent as its watch would send it, and the claim that has the
    -- watch skip this statement (set before the watch fires, at the end of the statement). in
    -- notify mode the payload goes straight to pg_notify; in table mode through
    -- statgate.send_change, with a variable (an sql function whose argument is an expression it
    -- uses more than once is not inlined, and would be parsed and planned at every call). a
    -- payload that may be too large for one notification is sent only when it is not: the
    -- watch splits a larger one.
    case when not self_sent then ' into statgate_left'
         when payload_bounded and mode = 'notify' then format(E', set_config(''statgate.claim'', %L, true),\n      pg_notify(''statgate_changes'', format(%L, %s, %s)) is null\n    into statgate_left, statgate_claim, statgate_sent',
           statgate.claim_of(c.stats, watched), payload_format, statgate.at_sql(), payload_values)
         when payload_bounded then format(E', set_config(''statgate.claim'', %L, true),\n      statgate.send_change(statgate_payload) is null\n    into statgate_left, statgate_claim, statgate_sent',
           statgate.claim_of(c.stats, watched))
         else format(E',\n      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then set_config(''statgate.claim'', %L, true) end,\n      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then %s is null end\n    into statgate_left, statgate_claim, statgate_sent',
           statgate.claim_of(c.stats, watched),
           case when mode = 'notify' then 'pg_notify(''statgate_changes'', statgate_payload)' else 'statgate.send_change(statgate_payload)' end) end,
    case when not self_sent then ''
         when payload_bounded and mode = 'notify' then ', and its change sent'
         else format(E', and its change sent\n  statgate_payload := format(%L, %s, %s);',
           payload_format, statgate.at_sql(), payload_var_values) end);

  return format($b$
declare%1$s
  statgate_in boolean;
  statgate_oin boolean;
  statgate_dc bigint;
  statgate_left bigint;
  statgate_payload text;
  statgate_claim text;
  statgate_sent boolean;
begin
  if tg_op = 'INSERT' then
    select %2$s, 1 into %3$s%4$s, statgate_in, statgate_dc from %5$s;%6$s
    if statgate_in is not true then
      return null; -- no row, or one the counter does not count
    end if;
  elsif tg_op = 'DELETE' then
    select %7$s, -1 into %3$s%4$s, statgate_in, statgate_dc from %8$s;%9$s
    if statgate_in is not true then
      return null;
    end if;
  elsif tg_op = 'UPDATE' then
    select %2$s into %10$s%11$s, statgate_oin from %8$s;
    select %2$s into %3$s%4$s, statgate_in from %5$s;%12$s
    if statgate_oin and statgate_in and %13$s then%14$s
    elsif statgate_oin and not statgate_in then%15$s
      statgate_dc := -1;
    elsif statgate_in and not statgate_oin then
      statgate_dc := 1;
    elsif not (statgate_oin or statgate_in) then
      return null; -- counted neither before nor after
    else
      -- moved to another group: the set-based statements
      %16$s
      return null;
    end if;
  else%17$s
    return null;
  end if;%18$s
  -- the group has no row yet: the set-based statements
  if tg_op = 'INSERT' then
    %19$s
  elsif tg_op = 'DELETE' then
    %20$s
  else
    %21$s
  end if;
  return null;
end
$b$,
    decls, plus_pick, k, sv, new_rel,
    format(one_row_check_new, replace(generic_insert, E'\n    ', E'\n      ')),
    minus_pick, old_rel,
    format(one_row_check_old, replace(generic_delete, E'\n    ', E'\n      ')),
    ok, osv,
    format(one_row_check_new, replace(generic_update, E'\n    ', E'\n      ')),
    (select string_agg(format('statgate_ok%1$s = statgate_k%1$s', i), ' and ' order by i) from generate_series(1, n_keys) i),
    same_group,
    (select string_agg(format(E'\n      statgate_k%1$s := statgate_ok%1$s;', i), '' order by i) from generate_series(1, n_keys) i)
      || coalesce((select string_agg(format(E'\n      statgate_s%1$s := -statgate_os%1$s;', i), '' order by i) from generate_series(1, n_sums) i), ''),
    replace(generic_update, E'\n    ', E'\n      '),
    on_truncate,
    apply, generic_insert, generic_delete, generic_update);
end;
$$;

-- (re)creates a counter's trigger function, as 0008 did; a declared counter's body is
-- statgate.counter_body, a rollup's the set-based statements.
create or replace function statgate.install_counter_function(c statgate.counters) returns void
language plpgsql as $$
declare
  fn text := statgate.counter_function(c.name);
  stats text := statgate.qualified(c.stats);
  s record := statgate.delta_statements(c);
  partitioned boolean := (select relkind from pg_class where oid = c.source) = 'p';
  truncate_partitioned text;
  body text;
begin
  if partitioned then
    truncate_partitioned := format($b$
    if tg_relid = %1$s then
      delete from %2$s;
    elsif not exists (select 1 from pg_partition_tree(%1$s::oid::regclass) p where p.relid = tg_relid) then
      null; -- a partition detached since: its rows left the source then
    elsif tg_when = 'BEFORE' then
      %3$s
    else
      %4$s
    end if;$b$,
      c.source::oid, stats,
      coalesce((select string_agg(format('execute %L || tg_relid::regclass::text || %L || %L;',
                  'with old_rows as (select * from ', ') ', st), E'\n      ' order by i)
                from unnest(s.on_leaf_truncate) with ordinality as u(st, i)), 'null;'),
      statgate.plpgsql_block(s.after_leaf_truncate, null));
  end if;
  if c.kind = 'counter' then
    body := statgate.counter_body(c, partitioned,
      case when partitioned then truncate_partitioned else format(E'\n    delete from %s;', stats) end);
  elsif partitioned then
    body := format($b$
begin
  if tg_op = 'TRUNCATE' then%1$s
  elsif tg_op = 'INSERT' then
    %2$s
  elsif tg_op = 'DELETE' then
    %3$s
  else
    %4$s
  end if;
  return null;
end
$b$,
      truncate_partitioned,
      statgate.plpgsql_block(s.on_insert, 'with new_rows as (select new.*)'),
      statgate.plpgsql_block(s.on_delete, 'with old_rows as (select old.*)'),
      statgate.plpgsql_block(s.on_update, 'with old_rows as (select old.*), new_rows as (select new.*)'));
  else
    body := format($b$
begin
  if tg_op = 'INSERT' then
    %1$s
  elsif tg_op = 'DELETE' then
    %2$s
  elsif tg_op = 'UPDATE' then
    %3$s
  else
    delete from %4$s;
  end if;
  return null;
end
$b$,
      statgate.plpgsql_block(s.on_insert, null), statgate.plpgsql_block(s.on_delete, null),
      statgate.plpgsql_block(s.on_update, null), stats);
  end if;
  execute format($f$
create or replace function %1$s() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $body$%2$s$body$
$f$, fn, body);
  execute format('revoke execute on function %s() from public', fn);
end;
$$;

drop function if exists statgate.counter_in_place(statgate.counters, text, text, text);
drop function if exists statgate.counter_update_row(statgate.counters, boolean, text, text);

-- existing databases ------------------------------------------------------------------------

-- every watch and every declared counter gets the new functions (see 0008 for one that this
-- role cannot re-install).
do $$
declare
  w statgate.watches;
  c statgate.counters;
begin
  for w in select * from statgate.watches order by tbl loop
    if not exists (select 1 from pg_class where oid = w.tbl) then
      continue;
    end if;
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
