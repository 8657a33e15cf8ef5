-- declarative counters and rollups: one call defines a stats table, the statement-level
-- triggers that keep it exact, a backfill, a refresh and a drift check (docs/COUNTERS.md).
--
-- the triggers are generated per definition as plain sql (no dynamic sql on the write path),
-- and apply each statement's delta as one set-based upsert: a 100,000-row insert costs one
-- stats statement and one notification, not 100,000 of each.
--
-- conventions shared by counters and rollups:
--   * a group exists in the stats table while it has at least one source row; the triggers
--     delete a group whose count reaches 0, so readers coalesce a missing row to 0.
--   * source rows with a null group key (or a null time, for rollups) are not counted: a
--     primary key cannot hold null.
--   * sums are 0, never null, for a group without non-null values; min/max are null then.

create table if not exists statgate.counters (
  name text primary key,
  kind text not null check (kind in ('counter', 'rollup')),
  stats regclass not null,
  source regclass not null,
  group_by text[] not null,
  filter text,
  sums text[] not null default '{}',
  time_column text,
  value_column text,
  granularities text[] not null default '{}',
  defined_at timestamptz not null default now()
);

-- `items` rendered through `template` (%1$I is the item, %2$I the item with `prefix`),
-- joined by `sep`, in order.
create or replace function statgate.sql_list(items text[], template text, sep text default ', ', prefix text default '')
returns text language sql immutable as $$
  select coalesce(string_agg(format(template, item, prefix || item), sep order by ord), '')
  from unnest(items) with ordinality as u(item, ord)
$$;

create or replace function statgate.column_type(tbl regclass, col text) returns text
language plpgsql stable as $$
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

-- the type of sum(col) over `tbl` (bigint for int4, numeric for int8, ...).
create or replace function statgate.sum_type(tbl regclass, col text) returns text
language plpgsql stable as $$
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

-- a counter's name is its stats table (optionally schema-qualified); the generated trigger
-- names must stay within postgresql's 63-byte identifiers.
create or replace function statgate.counter_table(name text) returns text
language plpgsql immutable as $$
declare
  parts text[];
begin
  if name is null or octet_length(name) > 40 then
    raise exception 'statgate: a counter name must be 1 to 40 bytes, got %', coalesce(name, 'null');
  end if;
  parts := parse_ident(name);
  return statgate.sql_list(parts, '%1$I', '.');
end;
$$;

-- creates the stats table if it is missing; if it exists, checks it has the needed columns.
create or replace function statgate.ensure_stats_table(stats text, columns text[], types text[], keys text[])
returns regclass language plpgsql as $$
declare
  tbl regclass := to_regclass(stats);
  missing text;
begin
  if tbl is null then
    execute format('create table %s (%s, primary key (%s))', stats,
      (select string_agg(format('%I %s', c, t), ', ' order by i)
       from unnest(columns, types) with ordinality as u(c, t, i)),
      statgate.sql_list(keys, '%1$I'));
    return to_regclass(stats);
  end if;
  select string_agg(c, ', ') into missing from unnest(columns) c
  where not exists (select 1 from pg_attribute where attrelid = tbl and attname = c and attnum > 0 and not attisdropped);
  if missing is not null then
    raise exception 'statgate: % exists but has no column(s) %; drop it or pick another name', stats, missing;
  end if;
  return tbl;
end;
$$;

create or replace function statgate.counter_triggers(name text, source regclass, fn text) returns void
language plpgsql as $$
declare
  base text := 'statgate_counter_' || name;
  trigger_name name;
begin
  for trigger_name in select tgname from pg_trigger where tgrelid = source
                        and tgname in (base || '_ins', base || '_upd', base || '_del', base || '_trunc') loop
    execute format('drop trigger %I on %s', trigger_name, source);
  end loop;
  if fn is null then
    return;
  end if;
  execute format('create trigger %I after insert on %s referencing new table as new_rows for each statement execute function %s()', base || '_ins', source, fn);
  execute format('create trigger %I after update on %s referencing old table as old_rows new table as new_rows for each statement execute function %s()', base || '_upd', source, fn);
  execute format('create trigger %I after delete on %s referencing old table as old_rows for each statement execute function %s()', base || '_del', source, fn);
  execute format('create trigger %I after truncate on %s for each statement execute function %s()', base || '_trunc', source, fn);
end;
$$;

create or replace function statgate.counter_function(name text) returns text
language sql immutable as $$ select format('statgate.%I', 'counter_' || name) $$;

-- (re)creates trigger function `fn` from the sql statements to run for each kind of
-- statement on the source; a truncate empties the stats table.
create or replace function statgate.install_counter_function(fn text, stats text,
  on_insert text[], on_delete text[], on_update text[]) returns void
language plpgsql as $$
begin
  execute format($f$
create or replace function %1$s() returns trigger language plpgsql as $body$
begin
  if tg_op = 'INSERT' then
    %2$s;
  elsif tg_op = 'DELETE' then
    %3$s;
  elsif tg_op = 'UPDATE' then
    %4$s;
  else
    delete from %5$s;
  end if;
  return null;
end
$body$
$f$, fn, array_to_string(on_insert, E';\n    '), array_to_string(on_delete, E';\n    '),
     array_to_string(on_update, E';\n    '), stats);
end;
$$;

-- define_counter: `name` keyed by `group_by`, with `count` and one `sum_<col>` per column of
-- `sums`, counting the rows of `source` for which `filter` (an sql expression over its
-- columns) is true. idempotent; the backfill runs under a share lock on `source`, so no
-- concurrent write slips between the backfill and the triggers.
create or replace function statgate.define_counter(name text, source regclass, group_by text[],
  filter text default null, sums text[] default '{}') returns void
language plpgsql as $$
declare
  stats text := statgate.counter_table(name);
  fn text := statgate.counter_function(name);
  col text;
  keys text;
  not_null text;
  row_filter text;
  sum_names text[];
  sum_types text[] := '{}';
  key_types text[] := '{}';
  plus_delta text;
  minus_delta text;
  net_delta text;
  upsert text;
  prune text;
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
    begin
      execute format('select 1 from %s where (%s) limit 0', source, filter);
    exception when others then
      raise exception 'statgate.define_counter(%): filter % does not work on %: %', name, filter, source, sqlerrm;
    end;
  end if;

  perform statgate.ensure_stats_table(stats, group_by || 'count'::text || sum_names,
    key_types || 'bigint not null default 0'::text || sum_types, group_by);
  insert into statgate.counters (name, kind, stats, source, group_by, filter, sums)
  values (name, 'counter', stats::regclass, source, group_by, filter, sums)
  on conflict on constraint counters_pkey do update
    set kind = excluded.kind, stats = excluded.stats, source = excluded.source, group_by = excluded.group_by,
        filter = excluded.filter, sums = excluded.sums, time_column = null, value_column = null,
        granularities = '{}', defined_at = now();

  keys := statgate.sql_list(group_by, '%1$I');
  not_null := statgate.sql_list(group_by, '%1$I is not null', ' and ');
  row_filter := not_null || coalesce(' and (' || filter || ')', '');
  plus_delta := format('select %s, count(*) as count%s from new_rows where %s group by %s',
    keys, statgate.sql_list(sums, ', coalesce(sum(%1$I), 0) as %2$I', '', 'sum_'), row_filter, keys);
  minus_delta := format('select %s, -count(*) as count%s from old_rows where %s group by %s',
    keys, statgate.sql_list(sums, ', -coalesce(sum(%1$I), 0) as %2$I', '', 'sum_'), row_filter, keys);
  net_delta := format('select %s, sum(count) as count%s from (%s union all %s) u group by %s having sum(count) <> 0%s',
    keys, statgate.sql_list(sum_names, ', sum(%1$I) as %1$I', ''), plus_delta, minus_delta, keys,
    statgate.sql_list(sum_names, ' or sum(%1$I) <> 0', ''));
  -- rows go in key order, so concurrent statements lock their groups in one order.
  upsert := format('insert into %1$s as t (%2$s, count%3$s) select %2$s, count%3$s from (%%s) d order by %2$s
    on conflict (%2$s) do update set count = t.count + excluded.count%4$s',
    stats, keys, statgate.sql_list(sum_names, ', %1$I', ''),
    statgate.sql_list(sum_names, ', %1$I = t.%1$I + excluded.%1$I', ''));
  prune := format('delete from %s t where t.count = 0 and (%s) in (select %s from old_rows where %s)',
    stats, statgate.sql_list(group_by, 't.%1$I'), keys, row_filter);

  perform statgate.install_counter_function(fn, stats,
    array[format(upsert, plus_delta)],
    array[format(upsert, minus_delta), prune],
    array[format(upsert, net_delta), prune]);

  perform statgate.counter_triggers(name, source, fn);
  perform statgate.watch(stats::regclass, group_by);
  perform statgate.refresh_counter(name);
end;
$$;

-- the bucket of a time column for a granularity held in `g.granularity`, in utc, and the
-- bounds of bucket `r.bucket_start` in the column's own type (for index range scans).
create or replace function statgate.rollup_time_sql(source regclass, time_column text, out bucket text, out lower_bound text, out upper_bound text)
language plpgsql stable as $$
declare
  ty text := statgate.column_type(source, time_column);
begin
  if ty = 'timestamp with time zone' then
    bucket := format('date_trunc(lower(g.granularity), %I at time zone ''UTC'')::date', time_column);
    lower_bound := '(r.bucket_start::timestamp at time zone ''UTC'')';
    upper_bound := '((r.bucket_start + (''1 '' || r.granularity)::interval) at time zone ''UTC'')';
  elsif ty = 'timestamp without time zone' then
    bucket := format('date_trunc(lower(g.granularity), %I)::date', time_column);
    lower_bound := 'r.bucket_start::timestamp';
    upper_bound := '(r.bucket_start + (''1 '' || r.granularity)::interval)';
  elsif ty = 'date' then
    bucket := format('date_trunc(lower(g.granularity), %I::timestamp)::date', time_column);
    lower_bound := 'r.bucket_start';
    upper_bound := '(r.bucket_start + (''1 '' || r.granularity)::interval)::date';
  else
    raise exception 'statgate: time column %.% must be timestamptz, timestamp or date, not %', source, time_column, ty;
  end if;
end;
$$;

-- define_rollup: `name` keyed by `group_by`, granularity and bucket_start (the utc date a
-- DAY, WEEK (iso, monday), MONTH or YEAR bucket starts), with count, sum, min and max of
-- `value_column`. inserts apply as one upsert; deletes and updates apply count and sum as a
-- delta and recompute min/max from `source` only for buckets that lost their extreme value
-- (an index on `source` (group_by..., time_column) keeps that a range scan).
create or replace function statgate.define_rollup(name text, source regclass, group_by text[],
  time_column text, value_column text, granularities text[]) returns void
language plpgsql as $$
declare
  stats text := statgate.counter_table(name);
  fn text := statgate.counter_function(name);
  col text;
  grans text[];
  grans_sql text;
  key_types text[] := '{}';
  value_type text;
  times record;
  keys text;
  all_keys text;
  row_filter text;
  rows_of text;
  plus_delta text;
  minus_delta text;
  net_delta text;
  upsert text;
  widen text;
  prune text;
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
  grans_sql := quote_literal(grans::text) || '::text[]';
  value_type := statgate.column_type(source, value_column);
  times := statgate.rollup_time_sql(source, time_column);

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

  keys := statgate.sql_list(group_by, '%1$I');
  all_keys := keys || ', granularity, bucket_start';
  row_filter := statgate.sql_list(group_by, '%1$I is not null', ' and ') || format(' and %I is not null', time_column);
  -- one row per (source row, granularity); the value is renamed so it cannot clash.
  rows_of := format('select %s, %I as statgate_value, g.granularity, %s as bucket_start from %%s cross join unnest(%s) as g(granularity) where %s',
    keys, value_column, times.bucket, grans_sql, row_filter);
  plus_delta := format('select %s, count(*) as count, coalesce(sum(statgate_value), 0) as sum, min(statgate_value) as min, max(statgate_value) as max from (%s) r group by %s',
    all_keys, format(rows_of, 'new_rows'), all_keys);
  minus_delta := format('select %1$s, -count(*) as count, -coalesce(sum(statgate_value), 0) as sum, null::%2$s as min, null::%2$s as max from (%3$s) r group by %1$s',
    all_keys, value_type, format(rows_of, 'old_rows'));
  net_delta := format('select %1$s, sum(count) as count, sum(sum) as sum, min(min) as min, max(max) as max from (%2$s union all %3$s) u
    group by %1$s having sum(count) <> 0 or sum(sum) <> 0 or min(min) is not null',
    all_keys, plus_delta, minus_delta);
  upsert := format('insert into %1$s as t (%2$s, count, sum, min, max) select %2$s, count, sum, min, max from (%%s) d order by %2$s
    on conflict (%2$s) do update set count = t.count + excluded.count, sum = t.sum + excluded.sum,
      min = least(t.min, excluded.min), max = greatest(t.max, excluded.max)
    where (t.count, t.sum, t.min, t.max) is distinct from
          (t.count + excluded.count, t.sum + excluded.sum, least(t.min, excluded.min), greatest(t.max, excluded.max))',
    stats, all_keys);
  -- a bucket that lost a row holding its min or max gets both recomputed from the source.
  widen := format('update %1$s t set (min, max) = (select min(m.%2$I), max(m.%2$I) from %3$s m where %4$s and m.%5$I >= %6$s and m.%5$I < %7$s)
    from (select %8$s, min(statgate_value) as removed_min, max(statgate_value) as removed_max from (%9$s) r group by %8$s) r
    where %10$s and t.granularity = r.granularity and t.bucket_start = r.bucket_start and t.count > 0
      and (r.removed_min <= t.min or r.removed_max >= t.max)',
    stats, value_column, source, statgate.sql_list(group_by, 'm.%1$I = r.%1$I', ' and '), time_column,
    times.lower_bound, times.upper_bound, all_keys, format(rows_of, 'old_rows'),
    statgate.sql_list(group_by, 't.%1$I = r.%1$I', ' and '));
  prune := format('delete from %s t where t.count = 0 and (%s, t.granularity, t.bucket_start) in (select %s from (%s) r)',
    stats, statgate.sql_list(group_by, 't.%1$I'), all_keys, format(rows_of, 'old_rows'));

  perform statgate.install_counter_function(fn, stats,
    array[format(upsert, plus_delta)],
    array[format(upsert, minus_delta), widen, prune],
    array[format(upsert, net_delta), widen, prune]);

  perform statgate.counter_triggers(name, source, fn);
  perform statgate.watch(stats::regclass, group_by || 'bucket_start'::text);
  perform statgate.refresh_counter(name);
end;
$$;

create or replace function statgate.counter(counter_name text) returns statgate.counters
language plpgsql stable as $$
declare
  definition statgate.counters;
begin
  select * into definition from statgate.counters c where c.name = counter_name;
  if not found then
    raise exception 'statgate: no counter or rollup named % (see statgate.counters)', counter_name;
  end if;
  return definition;
end;
$$;

-- what the stats table of `c` should hold, computed from the source: key columns, then
-- value columns, in the order of `statgate.counter_columns`.
create or replace function statgate.counter_live_sql(c statgate.counters) returns text
language plpgsql stable as $$
declare
  keys text := statgate.sql_list(c.group_by, '%1$I');
  times record;
begin
  if c.kind = 'counter' then
    return format('select %s, count(*) as count%s from %s where %s%s group by %s',
      keys, statgate.sql_list(c.sums, ', coalesce(sum(%1$I), 0) as %2$I', '', 'sum_'), c.source,
      statgate.sql_list(c.group_by, '%1$I is not null', ' and '), coalesce(' and (' || c.filter || ')', ''), keys);
  end if;
  times := statgate.rollup_time_sql(c.source, c.time_column);
  return format('select %1$s, granularity, bucket_start, count(*) as count, coalesce(sum(statgate_value), 0) as sum,
      min(statgate_value) as min, max(statgate_value) as max
    from (select %1$s, %2$I as statgate_value, g.granularity, %3$s as bucket_start
          from %4$s cross join unnest(%5$L::text[]) as g(granularity) where %6$s and %7$I is not null) r
    group by %1$s, granularity, bucket_start',
    keys, c.value_column, times.bucket, c.source, c.granularities,
    statgate.sql_list(c.group_by, '%1$I is not null', ' and '), c.time_column);
end;
$$;

create or replace function statgate.counter_columns(c statgate.counters, out keys text[], out vals text[])
language sql immutable as $$
  select case c.kind when 'counter' then c.group_by else c.group_by || array['granularity', 'bucket_start'] end,
         case c.kind when 'counter' then 'count'::text || array(select 'sum_' || s from unnest(c.sums) with ordinality as u(s, i) order by i)
                     else array['count', 'sum', 'min', 'max'] end
$$;

-- refresh_counter: rewrites every group that differs from the source and removes groups the
-- source no longer has; returns how many rows changed. holds a share lock on the source
-- (writers wait, readers do not) so no write lands between reading and rewriting.
create or replace function statgate.refresh_counter(name text) returns bigint
language plpgsql as $$
declare
  c statgate.counters := statgate.counter(name);
  cols record := statgate.counter_columns(c);
  changed bigint;
begin
  execute format('lock table %s in share mode', c.source);
  execute format('with live as (%1$s),
      up as (insert into %2$s as t (%3$s, %4$s) select %3$s, %4$s from live order by %3$s
             on conflict (%3$s) do update set %5$s where (%6$s) is distinct from (%7$s) returning 1),
      gone as (delete from %2$s t where not exists (select 1 from live l where %8$s) returning 1)
    select (select count(*) from up) + (select count(*) from gone)',
    statgate.counter_live_sql(c), c.stats, statgate.sql_list(cols.keys, '%1$I'), statgate.sql_list(cols.vals, '%1$I'),
    statgate.sql_list(cols.vals, '%1$I = excluded.%1$I'), statgate.sql_list(cols.vals, 't.%1$I'),
    statgate.sql_list(cols.vals, 'excluded.%1$I'), statgate.sql_list(cols.keys, 'l.%1$I = t.%1$I', ' and '))
  into changed;
  return changed;
end;
$$;

-- verify_counter: the groups whose stored values differ from the source, as json (empty when
-- the counter is exact). stored and live are read in one statement, so one snapshot: writes
-- committing meanwhile cannot show up as drift. float sums compare with a relative tolerance
-- of 1e-9, since adding and subtracting floats in another order rounds differently.
create or replace function statgate.verify_counter(name text)
returns table (key jsonb, stored jsonb, live jsonb)
language plpgsql stable as $$
declare
  c statgate.counters := statgate.counter(name);
  cols record := statgate.counter_columns(c);
  differs text;
begin
  select string_agg(case when format_type(a.atttypid, a.atttypmod) in ('double precision', 'real')
      then format('(s.%1$I is null) <> (l.%1$I is null) or abs(s.%1$I - l.%1$I) > 1e-9 * greatest(1, abs(l.%1$I))', v)
      else format('s.%1$I is distinct from l.%1$I', v) end, ' or ')
  into differs
  from unnest(cols.vals) v join pg_attribute a on a.attrelid = c.stats and a.attname = v;
  return query execute format('select jsonb_build_object(%1$s), case when s.statgate_present then jsonb_build_object(%2$s) end,
      case when l.statgate_present then jsonb_build_object(%3$s) end
    from (select t.*, true as statgate_present from %4$s t) s
    full join (select x.*, true as statgate_present from (%5$s) x) l on %6$s
    where s.statgate_present is null or l.statgate_present is null or %7$s
    order by 1',
    statgate.sql_list(cols.keys, '%1$L, coalesce(s.%1$I, l.%1$I)'), statgate.sql_list(cols.vals, '%1$L, s.%1$I'),
    statgate.sql_list(cols.vals, '%1$L, l.%1$I'), c.stats, statgate.counter_live_sql(c),
    statgate.sql_list(cols.keys, 's.%1$I = l.%1$I', ' and '), differs);
end;
$$;

-- drop_counter: removes the triggers and the definition; keeps the stats table and its watch.
create or replace function statgate.drop_counter(name text) returns void
language plpgsql as $$
declare
  c statgate.counters := statgate.counter(name);
begin
  perform statgate.counter_triggers(c.name, c.source, null);
  execute format('drop function if exists %s()', statgate.counter_function(c.name));
  delete from statgate.counters where statgate.counters.name = c.name;
end;
$$;
