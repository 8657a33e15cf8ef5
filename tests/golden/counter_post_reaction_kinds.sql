CREATE OR REPLACE FUNCTION statgate.counter_post_reaction_kinds()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
declare
  statgate_k1 bigint;
  statgate_ok1 bigint;
  statgate_k2 text;
  statgate_ok2 text;
  statgate_in boolean;
  statgate_oin boolean;
  statgate_dc bigint;
  statgate_left bigint;
  statgate_payload text;
  statgate_claim text;
  statgate_sent boolean;
begin
  if tg_op = 'INSERT' then
    select post_id, kind, coalesce((post_id is not null and kind is not null), false), 1 into statgate_k1, statgate_k2, statgate_in, statgate_dc from new_rows;
    perform from new_rows offset 1;
    if found then
      insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, count(*) as count from new_rows where post_id is not null and kind is not null group by post_id, kind) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
      return null;
    end if;
    if statgate_in is not true then
      return null; -- no row, or one the counter does not count
    end if;
  elsif tg_op = 'DELETE' then
    select post_id, kind, coalesce((post_id is not null and kind is not null), false), -1 into statgate_k1, statgate_k2, statgate_in, statgate_dc from old_rows;
    perform from old_rows offset 1;
    if found then
      insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, -count(*) as count from old_rows where post_id is not null and kind is not null group by post_id, kind) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
      delete from public.post_reaction_kinds t where t.count = 0 and (t.post_id, t.kind) in (select post_id, kind from old_rows where post_id is not null and kind is not null);
      return null;
    end if;
    if statgate_in is not true then
      return null;
    end if;
  elsif tg_op = 'UPDATE' then
    select post_id, kind, coalesce((post_id is not null and kind is not null), false) into statgate_ok1, statgate_ok2, statgate_oin from old_rows;
    select post_id, kind, coalesce((post_id is not null and kind is not null), false) into statgate_k1, statgate_k2, statgate_in from new_rows;
    perform from new_rows offset 1;
    if found then
      insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, sum(count) as count from (select post_id, kind, count(*) as count from new_rows where post_id is not null and kind is not null group by post_id, kind union all select post_id, kind, -count(*) as count from old_rows where post_id is not null and kind is not null group by post_id, kind) u group by post_id, kind having sum(count) <> 0) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
      delete from public.post_reaction_kinds t where t.count = 0 and (t.post_id, t.kind) in (select post_id, kind from old_rows where post_id is not null and kind is not null);
      return null;
    end if;
    if statgate_oin and statgate_in and statgate_ok1 = statgate_k1 and statgate_ok2 = statgate_k2 then
      return null; -- the row stays in its group: no count changes
    elsif statgate_oin and not statgate_in then
      statgate_k1 := statgate_ok1;
      statgate_k2 := statgate_ok2;
      statgate_dc := -1;
    elsif statgate_in and not statgate_oin then
      statgate_dc := 1;
    elsif not (statgate_oin or statgate_in) then
      return null; -- counted neither before nor after
    else
      -- moved to another group: the set-based statements
      insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, sum(count) as count from (select post_id, kind, count(*) as count from new_rows where post_id is not null and kind is not null group by post_id, kind union all select post_id, kind, -count(*) as count from old_rows where post_id is not null and kind is not null group by post_id, kind) u group by post_id, kind having sum(count) <> 0) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
      delete from public.post_reaction_kinds t where t.count = 0 and (t.post_id, t.kind) in (select post_id, kind from old_rows where post_id is not null and kind is not null);
      return null;
    end if;
  else
    delete from public.post_reaction_kinds;
    return null;
  end if;
  -- the one group the statement changes, in place, and its change sent
  statgate_payload := format('{"v": 1, "at": %s, "op": "UPDATE", "rows": {"kind": [%s], "post_id": [%s]}, "table": "post_reaction_kinds", "schema": "public"}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, to_jsonb(statgate_k2), to_jsonb(statgate_k1));
  update public.post_reaction_kinds t set count = t.count + statgate_dc where t.post_id = statgate_k1 and t.kind = statgate_k2
    returning t.count,
      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then set_config('statgate.claim', '<oid>:{post_id,kind}', true) end,
      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then pg_notify('statgate_changes', statgate_payload) is null end
    into statgate_left, statgate_claim, statgate_sent;
  if found then
    if statgate_left = 0 then
      delete from public.post_reaction_kinds t where t.post_id = statgate_k1 and t.kind = statgate_k2 and t.count = 0;
    end if;
    return null;
  end if;
  -- the group has no row yet: the set-based statements
  if tg_op = 'INSERT' then
    insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, count(*) as count from new_rows where post_id is not null and kind is not null group by post_id, kind) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
  elsif tg_op = 'DELETE' then
    insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, -count(*) as count from old_rows where post_id is not null and kind is not null group by post_id, kind) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
    delete from public.post_reaction_kinds t where t.count = 0 and (t.post_id, t.kind) in (select post_id, kind from old_rows where post_id is not null and kind is not null);
  else
    insert into public.post_reaction_kinds as t (post_id, kind, count) select post_id, kind, count from (select post_id, kind, sum(count) as count from (select post_id, kind, count(*) as count from new_rows where post_id is not null and kind is not null group by post_id, kind union all select post_id, kind, -count(*) as count from old_rows where post_id is not null and kind is not null group by post_id, kind) u group by post_id, kind having sum(count) <> 0) d order by post_id, kind on conflict (post_id, kind) do update set count = t.count + excluded.count;
    delete from public.post_reaction_kinds t where t.count = 0 and (t.post_id, t.kind) in (select post_id, kind from old_rows where post_id is not null and kind is not null);
  end if;
  return null;
end
$function$
