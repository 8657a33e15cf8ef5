-- a second change feed for write-heavy databases. NOTIFY takes a database-wide lock at commit
-- that serialises every notifying transaction; in 'table' mode the watch triggers append their
-- payloads to statgate.changes instead, which concurrent writers do without waiting on each
-- other, and statgate polls the table. the payloads are the same text in both modes.
-- needs postgresql 13 or later (xid8, pg_current_snapshot).

-- one row: the feed mode the watch triggers use. statgate sets it at start-up to its own
-- STATGATE_CHANGE_FEED, so every gateway of one database must use the same mode.
create table if not exists statgate.settings (
  only_row boolean primary key default true check (only_row),
  feed_mode text not null default 'notify' check (feed_mode in ('notify', 'table'))
);
insert into statgate.settings default values on conflict do nothing;

-- the change table. xid is the writing transaction: a poller remembers the snapshot of its
-- last read and next reads exactly the rows that have become visible since (commit order is
-- not id order, so "id > last id" would skip a slow transaction's rows). every gateway reads
-- every row; rows are deleted by a gateway once they are old enough for all to have seen them.
create table if not exists statgate.changes (
  id bigserial primary key,
  xid xid8 not null default pg_current_xact_id(),
  payload text not null,
  created_at timestamptz not null default now()
);
create index if not exists changes_xid on statgate.changes (xid);

create or replace function statgate.set_feed_mode(mode text) returns text
language plpgsql as $$
declare
  previous text;
begin
  if mode is null or mode not in ('notify', 'table') then
    raise exception 'statgate.set_feed_mode: mode must be ''notify'' or ''table'', got %', mode;
  end if;
  select feed_mode into previous from statgate.settings;
  insert into statgate.settings (only_row, feed_mode) values (true, mode)
    on conflict (only_row) do update set feed_mode = excluded.feed_mode;
  return previous;
end;
$$;

-- sends one payload the configured way. security definer: the application's role writes the
-- watched tables and needs no privilege on statgate's schema for its changes to be recorded.
create or replace function statgate.emit_change(change text) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if (select feed_mode from statgate.settings) = 'table' then
    insert into statgate.changes (payload) values (change);
  else
    perform pg_notify('statgate_changes', change);
  end if;
end;
$$;

-- as in 0001 (same payloads, same split and overflow rules, never aborts the write), but every
-- payload goes through statgate.emit_change.
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
      raise warning 'statgate: could not record a change of %.%: %', tg_table_schema, tg_table_name, sqlerrm;
    end;
  end;
  return null;
end;
$$;
