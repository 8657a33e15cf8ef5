CREATE OR REPLACE FUNCTION statgate.watch_<oid>()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
declare
  statgate_payload text;
  statgate_n int;
  statgate_at jsonb;
  statgate_vals jsonb;
  statgate_size int;
  statgate_i int;
begin
  if tg_op = 'UPDATE' then
    perform pg_catalog.pg_notify('statgate_changes', pg_catalog.format('{"v": 1, "at": %s, "op": "UPDATE", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)))
    from new_rows n where not exists (select from new_rows offset 1)
      and exists (select from old_rows o where o.post_id = n.post_id);
  elsif tg_op = 'INSERT' then
    perform pg_catalog.pg_notify('statgate_changes', pg_catalog.format('{"v": 1, "at": %s, "op": "INSERT", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)))
    from new_rows n where not exists (select from new_rows offset 1);
  else
    perform pg_catalog.pg_notify('statgate_changes', pg_catalog.format('{"v": 1, "at": %s, "op": "DELETE", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)))
    from old_rows n where not exists (select from old_rows offset 1);
  end if;
  if found then
    return null;
  end if;
  -- any other statement: every distinct value of the watched columns in one payload
  begin
    if tg_op = 'INSERT' then
      select pg_catalog.format('{"v": 1, "at": %s, "op": %s, "rows": {"post_id": %s}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, pg_catalog.to_json(tg_op), pg_catalog.jsonb_agg(distinct pg_catalog.to_jsonb(post_id)), pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)), pg_catalog.count(*) into statgate_payload, statgate_n from new_rows;
    elsif tg_op = 'DELETE' then
      select pg_catalog.format('{"v": 1, "at": %s, "op": %s, "rows": {"post_id": %s}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, pg_catalog.to_json(tg_op), pg_catalog.jsonb_agg(distinct pg_catalog.to_jsonb(post_id)), pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)), pg_catalog.count(*) into statgate_payload, statgate_n from old_rows;
    else
      select pg_catalog.format('{"v": 1, "at": %s, "op": %s, "rows": {"post_id": %s}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, pg_catalog.to_json(tg_op), pg_catalog.jsonb_agg(distinct pg_catalog.to_jsonb(post_id)), pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)), pg_catalog.count(*) into statgate_payload, statgate_n
      from (select post_id from new_rows union all select post_id from old_rows) statgate_s;
    end if;
    if statgate_n = 0 then
      return null; -- the statement touched no rows: nothing to say
    end if;
    if pg_catalog.octet_length(statgate_payload) <= 7900 then -- statgate.payload_max_bytes()
      perform pg_catalog.pg_notify('statgate_changes', statgate_payload);
      return null;
    end if;
    -- too large for one notification: the values of post_id in parts of about 7000 bytes
    -- (statgate.payload_part_bytes()), at most 20 of them (statgate.payload_max_parts()); the
    -- other columns are left out, which only widens what the parts match
    statgate_at := pg_catalog.jsonb_extract_path(statgate_payload::pg_catalog.jsonb, 'at');
    statgate_vals := pg_catalog.jsonb_extract_path(statgate_payload::pg_catalog.jsonb, 'rows', 'post_id');
    statgate_n := pg_catalog.jsonb_array_length(statgate_vals);
    statgate_size := greatest(1, statgate_n * 7000 / pg_catalog.octet_length(statgate_payload));
    if statgate_n / statgate_size + 1 > 20 then
      raise exception 'too many parts';
    end if;
    statgate_i := 0;
    while statgate_i < statgate_n loop
      statgate_payload := pg_catalog.jsonb_build_object('v', 1, 'schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op,
        'rows', pg_catalog.jsonb_build_object('post_id', (select pg_catalog.jsonb_agg(e)
                  from pg_catalog.jsonb_array_elements(statgate_vals) with ordinality as t(e, k)
                  where k > statgate_i and k <= statgate_i + statgate_size)),
        'at', statgate_at)::pg_catalog.text;
      if pg_catalog.octet_length(statgate_payload) > 7900 then
        raise exception 'a single value is too large';
      end if;
      perform pg_catalog.pg_notify('statgate_changes', statgate_payload);
      statgate_i := statgate_i + statgate_size;
    end loop;
  exception when others then
    -- not in one notification, nor in parts: an overflow (the gateway resyncs the table)
    begin
      perform pg_catalog.pg_notify('statgate_changes', pg_catalog.jsonb_build_object('v', 1, 'schema', tg_table_schema,
        'table', tg_table_name, 'op', tg_op, 'overflow', true, 'at', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint)::pg_catalog.text);
    exception when others then
      raise warning 'statgate: could not send a change of %.%: %', tg_table_schema, tg_table_name, sqlerrm;
    end;
  end;
  return null;
end
$function$
