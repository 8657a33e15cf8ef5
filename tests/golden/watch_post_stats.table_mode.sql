CREATE OR REPLACE FUNCTION statgate.watch_<oid>()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
declare
  statgate_payload text;
begin
  if tg_op = 'UPDATE' then
    null;
  end if;
  begin
    if tg_op = 'UPDATE' then
      select pg_catalog.format('{"v": 1, "at": %s, "op": "UPDATE", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)) into statgate_payload
      from new_rows n where not exists (select from new_rows offset 1)
        and exists (select from old_rows o where o.post_id = n.post_id);
    elsif tg_op = 'INSERT' then
      select pg_catalog.format('{"v": 1, "at": %s, "op": "INSERT", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)) into statgate_payload
      from new_rows n where not exists (select from new_rows offset 1);
    else
      select pg_catalog.format('{"v": 1, "at": %s, "op": "DELETE", "rows": {"post_id": [%s]}, "table": %s, "schema": %s}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, n.post_id, pg_catalog.to_json(tg_table_name), pg_catalog.to_json(tg_table_schema)) into statgate_payload
      from old_rows n where not exists (select from old_rows offset 1);
    end if;
    if found then
      insert into statgate.changes (payload) values (statgate_payload);
      return null;
    end if;
    if tg_op = 'INSERT' then
      select '{"v": 1, "at": ' || (date_part('epoch', clock_timestamp()) * 1000000)::bigint || ', "op": ' || to_json(tg_op)::text || ', "rows": ' || '{' || '"post_id": ' || jsonb_agg(distinct to_jsonb(post_id))::text || '}' || ', "table": ' || to_json(tg_table_name)::text || ', "schema": ' || to_json(tg_table_schema)::text || '}' into statgate_payload from new_rows;
    elsif tg_op = 'DELETE' then
      select '{"v": 1, "at": ' || (date_part('epoch', clock_timestamp()) * 1000000)::bigint || ', "op": ' || to_json(tg_op)::text || ', "rows": ' || '{' || '"post_id": ' || jsonb_agg(distinct to_jsonb(post_id))::text || '}' || ', "table": ' || to_json(tg_table_name)::text || ', "schema": ' || to_json(tg_table_schema)::text || '}' into statgate_payload from old_rows;
    else
      select '{"v": 1, "at": ' || (date_part('epoch', clock_timestamp()) * 1000000)::bigint || ', "op": ' || to_json(tg_op)::text || ', "rows": ' || '{' || '"post_id": ' || jsonb_agg(distinct to_jsonb(post_id))::text || '}' || ', "table": ' || to_json(tg_table_name)::text || ', "schema": ' || to_json(tg_table_schema)::text || '}' into statgate_payload
      from (select post_id from new_rows union all select post_id from old_rows) statgate_s;
    end if;
    if statgate_payload is null then
      return null; -- the statement touched no rows: nothing to say
    end if;
    if octet_length(statgate_payload) <= statgate.payload_max_bytes() then
      insert into statgate.changes (payload) values (statgate_payload);
    else
      perform statgate.emit_parts(tg_table_schema, tg_table_name, tg_op, statgate_payload::jsonb -> 'rows', 'post_id',
        octet_length(statgate_payload), (statgate_payload::jsonb ->> 'at')::bigint);
    end if;
  exception when others then
    begin
      insert into statgate.changes (payload) values (jsonb_build_object('v', 1, 'schema', tg_table_schema, 'table', tg_table_name, 'op', tg_op, 'overflow', true,
        'at', (date_part('epoch', clock_timestamp()) * 1000000)::bigint)::text);
    exception when others then
      perform statgate.change_lost(tg_table_schema, tg_table_name, sqlerrm);
    end;
  end;
  return null;
end
$function$
