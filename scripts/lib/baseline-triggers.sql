-- The hand-written baseline of scripts/bench-writers: what an application would write without
-- statgate to keep post_stats.comment_count and tell listeners, with the same effect on
-- post_stats as the example's comments_stats trigger for single-row writes.
--
-- One row-level trigger on comments: per live comment added or removed, one UPDATE of its
-- post's row (`comment_count + 1`, or `- 1`) and one small NOTIFY (the post id, on a channel of
-- its own). Cheap for one row; a statement of N rows runs it N times (N updates, N
-- notifications), which scripts/bench-counters measures for the bulk case.
--
-- Installed disabled (bench-writers enables it for its `baseline` mode); idempotent.

create or replace function bench_baseline_comment_count() returns trigger
language plpgsql as $$
begin
  if tg_op <> 'DELETE' and not new.deleted then
    update post_stats set comment_count = comment_count + 1, updated_at = now() where post_id = new.post_id;
    perform pg_notify('bench_baseline', new.post_id::text);
  end if;
  if tg_op <> 'INSERT' and not old.deleted then
    update post_stats set comment_count = comment_count - 1, updated_at = now() where post_id = old.post_id;
    perform pg_notify('bench_baseline', old.post_id::text);
  end if;
  return null;
end;
$$;

drop trigger if exists bench_baseline_comment_count on comments;
create trigger bench_baseline_comment_count
  after insert or update of post_id, deleted or delete on comments
  for each row execute function bench_baseline_comment_count();
alter table comments disable trigger bench_baseline_comment_count;
