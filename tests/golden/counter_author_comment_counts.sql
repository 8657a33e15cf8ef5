CREATE OR REPLACE FUNCTION statgate.counter_author_comment_counts()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
declare
  statgate_k1 text;
  statgate_ok1 text;
  statgate_in boolean;
  statgate_oin boolean;
  statgate_dc bigint;
  statgate_left bigint;
  statgate_payload text;
  statgate_claim text;
  statgate_sent boolean;
begin
  if tg_op = 'INSERT' then
    select author_id, coalesce((author_id is not null and (not deleted)), false), 1 into statgate_k1, statgate_in, statgate_dc from new_rows;
    perform from new_rows offset 1;
    if found then
      insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, count(*) as count from new_rows where author_id is not null and (not deleted) group by author_id) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
      return null;
    end if;
    if statgate_in is not true then
      return null; -- no row, or one the counter does not count
    end if;
  elsif tg_op = 'DELETE' then
    select author_id, coalesce((author_id is not null and (not deleted)), false), -1 into statgate_k1, statgate_in, statgate_dc from old_rows;
    perform from old_rows offset 1;
    if found then
      insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, -count(*) as count from old_rows where author_id is not null and (not deleted) group by author_id) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
      delete from public.author_comment_counts t where t.count = 0 and (t.author_id) in (select author_id from old_rows where author_id is not null and (not deleted));
      return null;
    end if;
    if statgate_in is not true then
      return null;
    end if;
  elsif tg_op = 'UPDATE' then
    select author_id, coalesce((author_id is not null and (not deleted)), false) into statgate_ok1, statgate_oin from old_rows;
    select author_id, coalesce((author_id is not null and (not deleted)), false) into statgate_k1, statgate_in from new_rows;
    perform from new_rows offset 1;
    if found then
      insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, sum(count) as count from (select author_id, count(*) as count from new_rows where author_id is not null and (not deleted) group by author_id union all select author_id, -count(*) as count from old_rows where author_id is not null and (not deleted) group by author_id) u group by author_id having sum(count) <> 0) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
      delete from public.author_comment_counts t where t.count = 0 and (t.author_id) in (select author_id from old_rows where author_id is not null and (not deleted));
      return null;
    end if;
    if statgate_oin and statgate_in and statgate_ok1 = statgate_k1 then
      return null; -- the row stays in its group: no count changes
    elsif statgate_oin and not statgate_in then
      statgate_k1 := statgate_ok1;
      statgate_dc := -1;
    elsif statgate_in and not statgate_oin then
      statgate_dc := 1;
    elsif not (statgate_oin or statgate_in) then
      return null; -- counted neither before nor after
    else
      -- moved to another group: the set-based statements
      insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, sum(count) as count from (select author_id, count(*) as count from new_rows where author_id is not null and (not deleted) group by author_id union all select author_id, -count(*) as count from old_rows where author_id is not null and (not deleted) group by author_id) u group by author_id having sum(count) <> 0) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
      delete from public.author_comment_counts t where t.count = 0 and (t.author_id) in (select author_id from old_rows where author_id is not null and (not deleted));
      return null;
    end if;
  else
    delete from public.author_comment_counts;
    return null;
  end if;
  -- the one group the statement changes, in place, and its change sent
  statgate_payload := format('{"v": 1, "at": %s, "op": "UPDATE", "rows": {"author_id": [%s]}, "table": "author_comment_counts", "schema": "public"}', (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000::double precision)::bigint, to_jsonb(statgate_k1));
  update public.author_comment_counts t set count = t.count + statgate_dc where t.author_id = statgate_k1
    returning t.count,
      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then set_config('statgate.claim', '<oid>:{author_id}', true) end,
      case when octet_length(statgate_payload) <= statgate.payload_max_bytes() then pg_notify('statgate_changes', statgate_payload) is null end
    into statgate_left, statgate_claim, statgate_sent;
  if found then
    if statgate_left = 0 then
      delete from public.author_comment_counts t where t.author_id = statgate_k1 and t.count = 0;
    end if;
    return null;
  end if;
  -- the group has no row yet: the set-based statements
  if tg_op = 'INSERT' then
    insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, count(*) as count from new_rows where author_id is not null and (not deleted) group by author_id) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
  elsif tg_op = 'DELETE' then
    insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, -count(*) as count from old_rows where author_id is not null and (not deleted) group by author_id) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
    delete from public.author_comment_counts t where t.count = 0 and (t.author_id) in (select author_id from old_rows where author_id is not null and (not deleted));
  else
    insert into public.author_comment_counts as t (author_id, count) select author_id, count from (select author_id, sum(count) as count from (select author_id, count(*) as count from new_rows where author_id is not null and (not deleted) group by author_id union all select author_id, -count(*) as count from old_rows where author_id is not null and (not deleted) group by author_id) u group by author_id having sum(count) <> 0) d order by author_id on conflict (author_id) do update set count = t.count + excluded.count;
    delete from public.author_comment_counts t where t.count = 0 and (t.author_id) in (select author_id from old_rows where author_id is not null and (not deleted));
  end if;
  return null;
end
$function$
