-- The baseline's database side (bench/baseline-node, README.md there): row-level triggers on the
-- example application's comments table keep post_stats.comment_count exact and NOTIFY the post.
--
-- Apply it to a database of its own that `statgate migrate --example` prepared (same tables,
-- same indexes, same posts trigger that gives every post its post_stats row). It first drops
-- every trigger on comments and post_stats: the example's statement-level counters
-- (comments_stats_*), statgate's watch triggers (statgate_watch_*), the declared counter
-- author_comment_counts (0006), and its own of an earlier run. That database then does only
-- what this file says, and no gateway may serve it. Idempotent.

begin;

do $$
declare
  t record;
begin
  for t in
    select tgname, tgrelid::regclass as tbl
      from pg_trigger
     where tgrelid in ('comments'::regclass, 'post_stats'::regclass)
       and not tgisinternal
  loop
    execute format('drop trigger %I on %s', t.tgname, t.tbl);
  end loop;
end;
$$;

-- One comment row in, out or moved: +1 / -1 on the post(s) whose live count it changes, and a
-- NOTIFY per changed post. A comment counts while it is not soft-deleted (`deleted`).
create or replace function baseline_comment_count() returns trigger
language plpgsql as $$
declare
  counted_before boolean := false; -- the old row counted for old.post_id
  counted_after boolean := false;  -- the new row counts for new.post_id
begin
  if tg_op in ('UPDATE', 'DELETE') then
    counted_before := not old.deleted;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    counted_after := not new.deleted;
  end if;
  if tg_op = 'UPDATE' and counted_before and counted_after and old.post_id = new.post_id then
    return null; -- still counted, same post: nothing changes
  end if;
  if counted_before then
    update post_stats set comment_count = comment_count - 1 where post_id = old.post_id;
    perform pg_notify('baseline_post_stats', old.post_id::text);
  end if;
  if counted_after then
    update post_stats set comment_count = comment_count + 1 where post_id = new.post_id;
    perform pg_notify('baseline_post_stats', new.post_id::text);
  end if;
  return null;
end;
$$;

create trigger baseline_comment_count
  after insert or delete or update of post_id, deleted on comments
  for each row execute function baseline_comment_count();

commit;
