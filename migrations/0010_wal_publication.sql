-- the database side of the 'wal' feed mode (issue 18): a publication of the watched tables,
-- kept equal to statgate.watches, that the gateway's logical replication slot reads with the
-- pgoutput plugin. in 'wal' mode no watch trigger runs (migration 0008); the writer's
-- transaction only writes its rows and postgresql's wal, which it writes anyway.
--
--   * statgate.publish_watches() makes publication statgate_watches list exactly the watched
--     tables (publish_via_partition_root, so a partitioned table's rows arrive under its own
--     name, as its watch's payloads did). it is called whenever the mode becomes or is 'wal':
--     by statgate.apply_feed_mode, statgate.watch and statgate.unwatch.
--   * a table whose replica identity does not carry its watched columns gets replica identity
--     full first: postgresql's wal then records the old row of an update or delete, which a
--     move (a row leaving one key for another) and a delete need to name the key they left.
--     a table with no replica identity at all could not even be updated once published
--     ("cannot update table ... because it does not have a replica identity and publishes
--     updates"), so it must never be published without one. a table this role may not alter
--     is left out of the publication, with a warning naming the command; the gateway refuses
--     to serve in 'wal' mode while a watched table is missing from it.
--   * outside 'wal' mode the publication is left as it is (it costs writers nothing).

-- the columns the replica identity of `rel` carries: all of them (full), those of its
-- identity index, of its primary key (default), or none.
create or replace function statgate.identity_columns(rel regclass) returns text[]
language sql stable set search_path = pg_catalog, pg_temp as $$
  select coalesce(case c.relreplident
    when 'f' then (select array_agg(a.attname::text) from pg_attribute a
                   where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)
    when 'n' then '{}'::text[]
    else (select array_agg(a.attname::text)
          from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
          where i.indrelid = c.oid
            and case when c.relreplident = 'i' then i.indisreplident else i.indisprimary end)
  end, '{}'::text[])
  from pg_class c where c.oid = rel
$$;

-- the tables whose rows postgresql writes to the wal for `rel`: itself, or its leaf partitions.
create or replace function statgate.wal_relations(rel regclass) returns setof regclass
language sql stable set search_path = pg_catalog, pg_temp as $$
  select rel where (select relkind from pg_class where oid = rel) <> 'p'
  union all
  select t.relid from pg_partition_tree(rel) t
  where (select relkind from pg_class where oid = rel) = 'p' and t.isleaf
$$;

-- gives every table behind `watched` a replica identity that carries `cols`; false (with a
-- warning) when this role may not.
create or replace function statgate.wal_identity(watched regclass, cols text[]) returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  rel regclass;
begin
  for rel in select statgate.wal_relations(watched) loop
    if not (cols <@ statgate.identity_columns(rel)) then
      begin
        execute format('alter table %s replica identity full', rel);
        raise notice 'statgate: % now has replica identity full, so the wal carries the old values of its watched columns %', rel, cols;
      exception when others then
        raise warning 'statgate: % is not published for the wal feed: its replica identity does not carry its watched columns %; run alter table % replica identity full as its owner, then select statgate.publish_watches(): %',
          rel, cols, rel, sqlerrm;
        return false;
      end;
    end if;
  end loop;
  return true;
end;
$$;

-- makes publication statgate_watches list exactly the watched tables. security definer (the
-- owner of statgate's functions adds and drops the tables); it only ever makes the publication
-- agree with statgate.watches, so anyone may call it, as statgate.apply_feed_mode.
create or replace function statgate.publish_watches() returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  t regclass;
  watched statgate.watches;
begin
  -- one at a time: concurrent callers would add the same tables.
  perform 1 from statgate.settings for update;
  if not exists (select 1 from pg_publication where pubname = 'statgate_watches') then
    create publication statgate_watches
      with (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);
  end if;
  for t in select pr.prrelid::regclass from pg_publication_rel pr
           join pg_publication p on p.oid = pr.prpubid
           where p.pubname = 'statgate_watches'
             and not exists (select 1 from statgate.watches sw where sw.tbl = pr.prrelid) loop
    execute format('alter publication statgate_watches drop table %s', t);
  end loop;
  for watched in select * from statgate.watches order by tbl loop
    continue when not exists (select 1 from pg_class where oid = watched.tbl);
    continue when exists (select 1 from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid
                          where p.pubname = 'statgate_watches' and pr.prrelid = watched.tbl);
    continue when not statgate.wal_identity(watched.tbl, watched.columns);
    begin
      execute format('alter publication statgate_watches add table %s', watched.tbl);
    exception when others then
      raise warning 'statgate: % is not published for the wal feed; run alter publication statgate_watches add table % as its owner: %',
        watched.tbl, watched.tbl, sqlerrm;
    end;
  end loop;
end;
$$;

-- the watched tables that the wal feed would not hear of, with why: for the gateway's check
-- at start-up in 'wal' mode.
create or replace function statgate.unpublished_watches() returns table (tbl text, reason text)
language sql stable set search_path = pg_catalog, pg_temp as $$
  select w.tbl::text,
         case when not exists (select 1 from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid
                               where p.pubname = 'statgate_watches' and pr.prrelid = w.tbl)
              then 'not in publication statgate_watches'
              else 'its replica identity does not carry its watched columns' end
  from statgate.watches w
  where exists (select 1 from pg_class where oid = w.tbl)
    and (not exists (select 1 from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid
                     where p.pubname = 'statgate_watches' and pr.prrelid = w.tbl)
         or exists (select 1 from statgate.wal_relations(w.tbl) r
                    where not (w.columns <@ statgate.identity_columns(r))))
  order by 1
$$;

-- as in 0009 (counters of the watched tables regenerated too), and the publication follows
-- the watches in 'wal' mode.
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
  if mode = 'wal' then
    perform statgate.publish_watches();
  end if;
end;
$$;

-- as in 0008, and the publication follows in 'wal' mode.
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
  if (select feed_mode from statgate.settings) = 'wal' then
    perform statgate.publish_watches();
  end if;
end;
$$;

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
  if (select feed_mode from statgate.settings) = 'wal' then
    perform statgate.publish_watches();
  end if;
end;
$$;

revoke execute on function statgate.wal_identity(regclass, text[]) from public;

-- a database already in 'wal' mode gets its publication now.
do $$
begin
  if (select feed_mode from statgate.settings) = 'wal' then
    perform statgate.publish_watches();
  end if;
end;
$$;
