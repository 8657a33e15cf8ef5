-- statgate's own schema: the watch helper whose statement-level triggers NOTIFY
-- `statgate_changes` once per statement with the distinct values of the watched columns.
create schema if not exists statgate;

-- builds and sends the payload of one statement. the watched columns arrive as trigger
-- arguments. any error falls back to an overflow payload: statgate never aborts a write.
create or replace function statgate.notify_changes() returns trigger
language plpgsql as $$
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
      perform pg_notify('statgate_changes', payload);
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
      perform pg_notify('statgate_changes', payload);
      i := i + chunk_size;
    end loop;
  exception when others then
    begin
      perform pg_notify('statgate_changes', (head || jsonb_build_object('overflow', true, 'at', at_us))::text);
    exception when others then
      raise warning 'statgate: could not notify a change of %.%: %', tg_table_schema, tg_table_name, sqlerrm;
    end;
  end;
  return null;
end;
$$;

-- installs (idempotently) the three statement-level triggers; postgresql allows one event per
-- trigger when transition tables are used.
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
  select string_agg(quote_literal(c), ', ') into args from unnest(cols) c;
  perform statgate.unwatch(tbl);
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
end;
$$;
