-- changes recorded whatever role writes, a count of the changes that still could not be, and
-- declared counters and watches that cover partitioned tables (issue 15; docs/RELIABILITY.md,
-- "Privileges"; docs/COUNTERS.md, "Partitioned sources").
--
-- every function that runs on an application's write path is now security definer with
-- search_path pinned to pg_catalog, pg_temp: it runs with the rights of its owner (the role
-- that ran the migrations for the watch triggers; the role that called define_counter for a
-- counter's triggers), whatever role writes, and resolves no name through a schema the writer
-- may control. every name in the generated sql is schema-qualified for that search_path.
-- only objects of schema statgate are created or replaced here; the triggers statgate installed
-- on watched tables and counter sources are re-installed from their definitions.

-- changes that could not be recorded ---------------------------------------------------------

-- one row per table and writing backend, so concurrent writers never wait on each other's
-- row. the gateway polls the total (statgate_unrecorded_changes) and resyncs when it grows.
create table if not exists statgate.unrecorded_changes (
  schema_name text not null,
  table_name text not null,
  backend_pid int not null,
  count bigint not null default 0,
  last_error text,
  last_at timestamptz,
  primary key (schema_name, table_name, backend_pid)
);

-- the last resort of the watch triggers: counts the lost change where the gateway looks, and
-- warns the writing client. never raises (a write must not fail because statgate could not
-- record it).
create or replace function statgate.change_lost(of_schema text, of_table text, error text) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  begin
    insert into statgate.unrecorded_changes as u (schema_name, table_name, backend_pid, count, last_error, last_at)
    values (of_schema, of_table, pg_backend_pid(), 1, error, now())
    on conflict on constraint unrecorded_changes_pkey do update
      set count = u.count + 1, last_error = excluded.last_error, last_at = excluded.last_at;
  exception when others then
    raise warning 'statgate: could not count a lost change of %.%: %', of_schema, of_table, sqlerrm;
  end;
  raise warning 'statgate: could not record a change of %.%: %', of_schema, of_table, error;
end;
$$;

-- the watch triggers ------------------------------------------------------------------------

-- as in 0004 (same payloads, split and overflow rules, never aborts the write), with the
-- rights of its owner, and a change that cannot be recorded even as an overflow is counted.
create or replace function statgate.notify_changes() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  col text;
  vals jsonb;
  rows_obj jsonb := '{}'::jsonb;
  sources text;
  head jsonb;
  payload text;
  at_us bigint := (extract(epoch from clock_timestamp()) * 1000000)::bigint;
  part jsonb;
  chunk_size int;
  n int;
  i int;
begin
  head := jsonb_build_object('v', 1, 'schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op);
  sources := case tg_op
    when 'INSERT' then 'select %1$I as x from new_rows'
    when 'DELETE' then 'select %1$I as x from old_rows'
    else 'select %1$I as x from new_rows union select %1$I from old_rows' end;
  begin
    foreach col in array tg_argv loop
      execute format('select jsonb_agg(distinct to_jsonb(s.x)) from (' || sources || ') s', col) into vals;
      if vals is null then
        return null; -- the statement touched no rows: nothing to say
      end if;
      rows_obj := rows_obj || jsonb_build_object(col, vals);
    end loop;
    payload := (head || jsonb_build_object('rows', rows_obj, 'at', at_us))::text;
    if octet_length(payload) <= 7900 then
      perform statgate.emit_change(payload);
      return null;
    end if;
    -- too large: split the values of the first watched column into parts (other columns are
    -- then left out of the parts, which only widens what they match).
    col := tg_argv[0];
    vals := rows_obj -> col;
    n := jsonb_array_length(vals);
    chunk_size := greatest(1, (n * 7000 / octet_length(payload)));
    if n / chunk_size + 1 > 20 then
      raise exception 'too many parts';
    end if;
    i := 0;
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
  exception when others then
    begin
      perform statgate.emit_change((head || jsonb_build_object('overflow', true, 'at', at_us))::text);
    exception when others then
      perform statgate.change_lost(tg_table_schema, tg_table_name, sqlerrm);
    end;
  end;
  return null;
end;
$$;

-- the watch trigger of a partitioned table: a row-level trigger, which postgresql clones to
-- every partition, present or future, so a statement naming a partition is seen too (a
-- statement-level trigger fires only for statements naming the table it is on). it fires on
-- the partition, so the watched table's schema and name come as its first two arguments, the
-- watched columns after. one payload per row: the old and new values of each column; payloads
-- of one statement with the same values are one notification (postgresql folds identical
-- payloads of a transaction), and overflow, splitting aside, follows notify_changes.
create or replace function statgate.notify_row_changes() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  head jsonb := jsonb_build_object('v', 1, 'schema', tg_argv[0], 'table', tg_argv[1], 'op', tg_op);
  at_us bigint := (extract(epoch from statement_timestamp()) * 1000000)::bigint;
  new_row jsonb;
  old_row jsonb;
  rows_obj jsonb := '{}'::jsonb;
  vals jsonb;
  col text;
  payload text;
begin
  begin
    if tg_op <> 'DELETE' then
      new_row := to_jsonb(new);
    end if;
    if tg_op <> 'INSERT' then
      old_row := to_jsonb(old);
    end if;
    for i in 2 .. tg_nargs - 1 loop
      col := tg_argv[i];
      if not coalesce(new_row ? col, old_row ? col) then
        raise exception 'no column %', col;
      end if;
      select jsonb_agg(distinct v) into vals
      from (values (new_row -> col), (old_row -> col)) as x(v) where v is not null;
      rows_obj := rows_obj || jsonb_build_object(col, vals);
    end loop;
    payload := (head || jsonb_build_object('rows', rows_obj, 'at', at_us))::text;
    if octet_length(payload) > 7900 then
      raise exception 'a single row is too large';
    end if;
    perform statgate.emit_change(payload);
  exception when others then
    begin
      perform statgate.emit_change((head || jsonb_build_object('overflow', true, 'at', at_us))::text);
    exception when others then
      perform statgate.change_lost(tg_argv[0], tg_argv[1], sqlerrm);
    end;
  end;
  return null;
end;
$$;

-- installs (idempotently) the watch triggers: three statement-level ones (one event each, as
-- transition tables require), or for a partitioned table one row-level trigger.
create or replace function statgate.watch(tbl regclass, cols text[]) returns void
language plpgsql as $$
declare
  col text;
  args text;
begin
  if cols is null or array_length(cols, 1) is null then
    raise exception 'statgate.watch(%): name at least one column', tbl;
  end if;
  foreach col in array cols loop
    if not exists (select 1 from pg_attribute where attrelid = tbl and attname = col and attnum > 0 and not attisdropped) then
      raise exception 'statgate.watch(%): no column %', tbl, col;
    end if;
  end loop;
  select string_agg(quote_literal(c), ', ' order by i) into args from unnest(cols) with ordinality as u(c, i);
  perform statgate.unwatch(tbl);
  if (select relkind from pg_class where oid = tbl) = 'p' then
    select quote_literal(n.nspname) || ', ' || quote_literal(c.relname) || ', ' || args into args
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = tbl;
    execute format('create trigger statgate_watch_row after insert or update or delete on %s for each row execute function statgate.notify_row_changes(%s)', tbl, args);
    return;
  end if;
  execute format('create trigger statgate_watch_ins after insert on %s referencing new table as new_rows for each statement execute function statgate.notify_changes(%s)', tbl, args);
  execute format('create trigger statgate_watch_upd after update on %s referencing old table as old_rows new table as new_rows for each statement execute function statgate.notify_changes(%s)', tbl, args);
  execute format('create trigger statgate_watch_del after delete on %s referencing old table as old_rows for each statement execute function statgate.notify_changes(%s)', tbl, args);
end;
$$;

create or replace function statgate.unwatch(tbl regclass) returns void
language plpgsql as $$
begin
  execute format('drop trigger if exists statgate_watch_ins on %s', tbl);
  execute format('drop trigger if exists statgate_watch_upd on %s', tbl);
  execute format('drop trigger if exists statgate_watch_del on %s', tbl);
  execute format('drop trigger if exists statgate_watch_row on %s', tbl);
end;
$$;

-- no role but the owner may call these directly: emit_change would let it inject changes,
-- change_lost fake lost ones, and a trigger of its own on the watch functions would run with
-- the owner's rights. firing an installed trigger needs no execute privilege.
revoke execute on function statgate.emit_change(text) from public;
revoke execute on function statgate.change_lost(text, text, text) from public;
revoke execute on function statgate.notify_changes() from public;
revoke execute on function statgate.notify_row_changes() from public;

-- declared counters ---------------------------------------------------------------------------

-- `rel` schema-qualified whatever the caller's search_path (regclass output qualifies a name
-- that is not visible, and with this search_path no user table is).
create or replace function statgate.qualified(rel regclass) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$ select rel::text $$;

-- as in 0005; types come out schema-qualified, as the generated sql needs them.
create or replace function statgate.column_type(tbl regclass, col text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  type_name text;
begin
  select format_type(atttypid, atttypmod) into type_name
  from pg_attribute where attrelid = tbl and attname = col and attnum > 0 and not attisdropped;
  if type_name is null then
    raise exception 'statgate: % has no column %', tbl, col;
  end if;
  return type_name;
end;
$$;

create or replace function statgate.sum_type(tbl regclass, col text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  type_name text;
begin
  perform statgate.column_type(tbl, col);
  execute format('select pg_typeof(sum(%I))::text from %s where false', col, tbl) into type_name;
  return type_name;
exception when undefined_function then
  raise exception 'statgate: cannot sum %.% (type %)', tbl, col, statgate.column_type(tbl, col);
end;
$$;

-- a counter's filter runs inside its triggers, with their search_path: it must work there.
create or replace function statgate.check_filter(name text, source regclass, filter text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  execute format('select 1 from %s where (%s) limit 0', source, filter);
exception when others then
  raise exception 'statgate.define_counter(%): filter % does not work on % with search_path pg_catalog, pg_temp (the triggers run with it: schema-qualify other names): %',
    name, filter, source, sqlerrm;
end;
$$;

-- the statements a counter's triggers run, from its definition, over the relations `new_rows`
-- and `old_rows` (the transition tables of a statement, the one row of a row-level trigger,
-- or the rows of a partition about to be truncated):
--   on_insert, on_delete, on_update     for each kind of write;
--   on_leaf_truncate                     before a partition of a partitioned source is
--                                        truncated (old_rows: its rows);
--   after_leaf_truncate                  after it (rollups: min and max of the buckets that
--                                        lost an extreme value, from what is left).
create or replace function statgate.delta_statements(c statgate.counters,
  out on_insert text[], out on_delete text[], out on_update text[],
  out on_leaf_truncate text[], out after_leaf_truncate text[])
language plpgsql stable as $$
declare
  stats text := statgate.qualified(c.stats);
  source text := statgate.qualified(c.source);
  keys text := statgate.sql_list(c.group_by, '%1$I');
  sum_names text[] := array(select 'sum_' || s from unnest(c.sums) with ordinality as u(s, i) order by i);
  row_filter text;
  plus_delta text;
  minus_delta text;
  net_delta text;
  upsert_head text;
  upsert_tail text;
  prune text;
  -- rollups
  times record;
  value_type text;
  all_keys text;
  rows_head text;
  rows_tail text;
  removed text;
  widen text;
  forget_extremes text;
  recompute_extremes text;
begin
  if c.kind = 'counter' then
    row_filter := statgate.sql_list(c.group_by, '%1$I is not null', ' and ') || coalesce(' and (' || c.filter || ')', '');
    plus_delta := format('select %s, count(*) as count%s from new_rows where ', keys,
      statgate.sql_list(c.sums, ', coalesce(sum(%1$I), 0) as %2$I', '', 'sum_')) || row_filter || ' group by ' || keys;
    minus_delta := format('select %s, -count(*) as count%s from old_rows where ', keys,
      statgate.sql_list(c.sums, ', -coalesce(sum(%1$I), 0) as %2$I', '', 'sum_')) || row_filter || ' group by ' || keys;
    net_delta := format('select %s, sum(count) as count%s from (', keys, statgate.sql_list(sum_names, ', sum(%1$I) as %1$I', ''))
      || plus_delta || ' union all ' || minus_delta
      || format(') u group by %s having sum(count) <> 0%s', keys, statgate.sql_list(sum_names, ' or sum(%1$I) <> 0', ''));
    -- rows go in key order, so concurrent statements lock their groups in one order.
    upsert_head := format('insert into %1$s as t (%2$s, count%3$s) select %2$s, count%3$s from (',
      stats, keys, statgate.sql_list(sum_names, ', %1$I', ''));
    upsert_tail := format(') d order by %1$s on conflict (%1$s) do update set count = t.count + excluded.count%2$s',
      keys, statgate.sql_list(sum_names, ', %1$I = t.%1$I + excluded.%1$I', ''));
    prune := format('delete from %s t where t.count = 0 and (%s) in (select %s from old_rows where ',
      stats, statgate.sql_list(c.group_by, 't.%1$I'), keys) || row_filter || ')';
    on_insert := array[upsert_head || plus_delta || upsert_tail];
    on_delete := array[upsert_head || minus_delta || upsert_tail, prune];
    on_update := array[upsert_head || net_delta || upsert_tail, prune];
    on_leaf_truncate := on_delete;
    after_leaf_truncate := '{}';
    return;
  end if;

  times := statgate.rollup_time_sql(c.source, c.time_column);
  value_type := statgate.column_type(c.source, c.value_column);
  all_keys := keys || ', granularity, bucket_start';
  -- one row per (source row, granularity); the value is renamed so it cannot clash.
  rows_head := format('select %s, %I as statgate_value, g.granularity, %s as bucket_start from ', keys, c.value_column, times.bucket);
  rows_tail := format(' cross join unnest(%s::text[]) as g(granularity) where %s and %I is not null',
    quote_literal(c.granularities::text), statgate.sql_list(c.group_by, '%1$I is not null', ' and '), c.time_column);
  plus_delta := format('select %1$s, count(*) as count, coalesce(sum(statgate_value), 0) as sum, min(statgate_value) as min, max(statgate_value) as max from (', all_keys)
    || rows_head || 'new_rows' || rows_tail || format(') r group by %s', all_keys);
  minus_delta := format('select %1$s, -count(*) as count, -coalesce(sum(statgate_value), 0) as sum, null::%2$s as min, null::%2$s as max from (', all_keys, value_type)
    || rows_head || 'old_rows' || rows_tail || format(') r group by %s', all_keys);
  net_delta := format('select %1$s, sum(count) as count, sum(sum) as sum, min(min) as min, max(max) as max from (', all_keys)
    || plus_delta || ' union all ' || minus_delta
    || format(') u group by %s having sum(count) <> 0 or sum(sum) <> 0 or min(min) is not null', all_keys);
  upsert_head := format('insert into %1$s as t (%2$s, count, sum, min, max) select %2$s, count, sum, min, max from (', stats, all_keys);
  upsert_tail := format(') d order by %1$s
    on conflict (%1$s) do update set count = t.count + excluded.count, sum = t.sum + excluded.sum,
      min = least(t.min, excluded.min), max = greatest(t.max, excluded.max)
    where (t.count, t.sum, t.min, t.max) is distinct from
          (t.count + excluded.count, t.sum + excluded.sum, least(t.min, excluded.min), greatest(t.max, excluded.max))', all_keys);
  -- the buckets that lost rows, with the smallest and largest value they lost.
  removed := format('(select %1$s, min(statgate_value) as removed_min, max(statgate_value) as removed_max from (', all_keys)
    || rows_head || 'old_rows' || rows_tail || format(') r group by %s) r', all_keys);
  -- a bucket that lost a row holding its min or max gets both recomputed from the source.
  widen := format('update %1$s t set (min, max) = (select min(m.%2$I), max(m.%2$I) from %3$s m where %4$s and m.%5$I >= %6$s and m.%5$I < %7$s) from ',
      stats, c.value_column, source, statgate.sql_list(c.group_by, 'm.%1$I = r.%1$I', ' and '), c.time_column,
      times.lower_bound, times.upper_bound)
    || removed || format(' where %s and t.granularity = r.granularity and t.bucket_start = r.bucket_start and t.count > 0
      and (r.removed_min <= t.min or r.removed_max >= t.max)', statgate.sql_list(c.group_by, 't.%1$I = r.%1$I', ' and '));
  prune := format('delete from %s t where t.count = 0 and (%s, t.granularity, t.bucket_start) in (select %s from (',
      stats, statgate.sql_list(c.group_by, 't.%1$I'), all_keys)
    || rows_head || 'old_rows' || rows_tail || ') r)';
  -- before a partition is truncated its rows are still in the source, and other partitions
  -- truncated by the same statement too: the extremes it held are forgotten (null) and
  -- recomputed after the truncation, from what is left.
  forget_extremes := format('update %1$s t set min = null, max = null from ', stats)
    || removed || format(' where %s and t.granularity = r.granularity and t.bucket_start = r.bucket_start and t.count > 0
      and (r.removed_min <= t.min or r.removed_max >= t.max)', statgate.sql_list(c.group_by, 't.%1$I = r.%1$I', ' and '));
  recompute_extremes := format('update %1$s r set (min, max) = (select min(m.%2$I), max(m.%2$I) from %3$s m where %4$s and m.%5$I >= %6$s and m.%5$I < %7$s)
    where r.count > 0 and (r.min is null or r.max is null)',
    stats, c.value_column, source, statgate.sql_list(c.group_by, 'm.%1$I = r.%1$I', ' and '), c.time_column,
    times.lower_bound, times.upper_bound);
  on_insert := array[upsert_head || plus_delta || upsert_tail];
  on_delete := array[upsert_head || minus_delta || upsert_tail, widen, prune];
  on_update := array[upsert_head || net_delta || upsert_tail, widen, prune];
  on_leaf_truncate := array[upsert_head || minus_delta || upsert_tail, forget_extremes, prune];
  after_leaf_truncate := array[recompute_extremes];
end;
$$;

-- `statements` as plpgsql, each run over `relations` (a with-list naming new_rows / old_rows).
create or replace function statgate.plpgsql_block(statements text[], relations text) returns text
language sql immutable as $$
  select coalesce(string_agg(coalesce(relations || ' ', '') || s || ';', E'\n    ' order by i), 'null;')
  from unnest(statements) with ordinality as u(s, i)
$$;

-- (re)creates a counter's trigger function and triggers from its definition, without
-- touching the stats table. the function is security definer (owner: the caller, who must be
-- able to read the source and write the stats table) with search_path pinned, so any role
-- that may write the source keeps the counter exact.
--
-- a plain source gets statement-level triggers with transition tables: one set-based upsert
-- per statement. a partitioned source gets a row-level trigger, which postgresql clones to
-- every partition, present and future, so writes through a partition count too (statement-
-- level triggers fire only for statements naming their own table, and row-level ones cannot
-- have transition tables). truncating the source empties the stats table; truncating a leaf
-- partition that existed at installation subtracts its rows, before, and recomputes the
-- extremes it held, after. a partition created or attached later needs a reinstall for that
-- (docs/COUNTERS.md).
create or replace function statgate.install_counter(c statgate.counters) returns void
language plpgsql as $$
declare
  fn text := statgate.counter_function(c.name);
  base text := 'statgate_counter_' || c.name;
  stats text := statgate.qualified(c.stats);
  s record := statgate.delta_statements(c);
  body text;
  leaf regclass;
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
      statgate.plpgsql_block(s.on_insert, 'with new_rows as (select new.*)'),
      statgate.plpgsql_block(s.on_delete, 'with old_rows as (select old.*)'),
      statgate.plpgsql_block(s.on_update, 'with old_rows as (select old.*), new_rows as (select new.*)'));
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
begin%2$s
  return null;
end
$body$
$f$, fn, body);
  execute format('revoke execute on function %s() from public', fn);

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

-- drops every trigger that runs a counter's function (on the source and on any partition,
-- present or detached), and those named after it on the source.
create or replace function statgate.remove_counter_triggers(name text, source regclass) returns void
language plpgsql as $$
declare
  base text := 'statgate_counter_' || name;
  fn regprocedure := to_regprocedure(statgate.counter_function(name) || '()');
  t record;
begin
  for t in select tg.tgname, tg.tgrelid::regclass as rel from pg_trigger tg
           where tg.tgparentid = 0
             and (tg.tgfoid = fn
                  or (tg.tgrelid = source and tg.tgname in (base || '_ins', base || '_upd', base || '_del', base || '_trunc', base || '_row')))
  loop
    execute format('drop trigger %I on %s', t.tgname, t.rel);
  end loop;
end;
$$;

-- re-generates a counter's triggers from its definition (after creating or attaching a
-- partition of its source, or to pick up a new version of statgate's generator), without
-- backfilling. run it as the counter's owner.
create or replace function statgate.reinstall_counter(name text) returns void
language plpgsql as $$
begin
  perform statgate.install_counter(statgate.counter(name));
end;
$$;

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

  perform statgate.install_counter(statgate.counter(name));
  perform statgate.watch(stats::regclass, group_by);
  perform statgate.refresh_counter(name);
end;
$$;

create or replace function statgate.define_rollup(name text, source regclass, group_by text[],
  time_column text, value_column text, granularities text[]) returns void
language plpgsql as $$
declare
  stats text := statgate.counter_table(name);
  col text;
  grans text[];
  key_types text[] := '{}';
  value_type text;
begin
  if group_by is null or cardinality(group_by) = 0 then
    raise exception 'statgate.define_rollup(%): group_by needs at least one column', name;
  end if;
  foreach col in array group_by loop
    if col in ('granularity', 'bucket_start', 'count', 'sum', 'min', 'max') then
      raise exception 'statgate.define_rollup(%): a group_by column may not be called %', name, col;
    end if;
    key_types := key_types || (statgate.column_type(source, col) || ' not null');
  end loop;
  grans := array(select distinct upper(g) from unnest(granularities) g order by 1);
  if cardinality(grans) = 0 or exists (select 1 from unnest(grans) g where g is null or g not in ('DAY', 'WEEK', 'MONTH', 'YEAR')) then
    raise exception 'statgate.define_rollup(%): granularities must be some of DAY, WEEK, MONTH, YEAR, got %', name, granularities;
  end if;
  value_type := statgate.column_type(source, value_column);
  perform statgate.rollup_time_sql(source, time_column);

  perform statgate.ensure_stats_table(stats,
    group_by || array['granularity', 'bucket_start', 'count', 'sum', 'min', 'max'],
    key_types || array['text not null', 'date not null', 'bigint not null',
                       statgate.sum_type(source, value_column) || ' not null default 0', value_type, value_type],
    group_by || array['granularity', 'bucket_start']);
  insert into statgate.counters (name, kind, stats, source, group_by, time_column, value_column, granularities)
  values (name, 'rollup', stats::regclass, source, group_by, time_column, value_column, grans)
  on conflict on constraint counters_pkey do update
    set kind = excluded.kind, stats = excluded.stats, source = excluded.source, group_by = excluded.group_by,
        filter = null, sums = '{}', time_column = excluded.time_column, value_column = excluded.value_column,
        granularities = excluded.granularities, defined_at = now();

  perform statgate.install_counter(statgate.counter(name));
  perform statgate.watch(stats::regclass, group_by || 'bucket_start'::text);
  perform statgate.refresh_counter(name);
end;
$$;

-- drop_counter: removes the triggers (partitions included) and the definition; keeps the
-- stats table and its watch.
create or replace function statgate.drop_counter(name text) returns void
language plpgsql as $$
declare
  c statgate.counters := statgate.counter(name);
begin
  perform statgate.remove_counter_triggers(c.name, c.source);
  execute format('drop function if exists %s()', statgate.counter_function(c.name));
  delete from statgate.counters where statgate.counters.name = c.name;
end;
$$;

-- replaced by install_counter and remove_counter_triggers.
drop function if exists statgate.counter_triggers(text, regclass, text);
drop function if exists statgate.install_counter_function(text, text, text[], text[], text[]);

-- existing databases get the fix: every declared counter's triggers are re-generated (no
-- backfill), and every watched partitioned table gets the row-level watch. a counter this role
-- cannot re-install (another role owns its function) keeps its triggers, with a warning.
do $$
declare
  c statgate.counters;
  t record;
begin
  for c in select * from statgate.counters order by name loop
    begin
      perform statgate.install_counter(c);
    exception when others then
      raise warning 'statgate: counter % keeps its previous triggers; run select statgate.reinstall_counter(%) as its owner: %',
        c.name, quote_literal(c.name), sqlerrm;
    end;
  end loop;
  for t in select tg.tgrelid::regclass as rel, tg.tgargs from pg_trigger tg join pg_class r on r.oid = tg.tgrelid
           where tg.tgname = 'statgate_watch_ins' and r.relkind = 'p' loop
    perform statgate.watch(t.rel, array_remove(string_to_array(encode(t.tgargs, 'escape'), '\000'), ''));
  end loop;
end;
$$;
