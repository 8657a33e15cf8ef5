-- the example application on declarative counters (docs/COUNTERS.md).
--
-- measurement_rollups was kept by a hand-written trigger that recomputed every touched DAY
-- bucket from the source; define_rollup now keeps it, for DAY, WEEK and MONTH buckets, with
-- delta upserts. post_stats stays hand-written on purpose: one row holds two counters fed by
-- two source tables, and it exists from a post's birth (0 rather than no row), which a
-- generated counter (one source, a row per non-empty group) does not express.
drop trigger if exists measurement_rollups_ins on measurements;
drop trigger if exists measurement_rollups_upd on measurements;
drop trigger if exists measurement_rollups_del on measurements;
drop function if exists measurement_rollups_apply();
alter table measurement_rollups drop constraint if exists measurement_rollups_granularity_check;
alter table measurement_rollups
  add constraint measurement_rollups_granularity_check check (granularity in ('DAY', 'WEEK', 'MONTH', 'YEAR'));
select statgate.define_rollup('measurement_rollups', 'measurements', array['user_id', 'type'],
  'taken_at', 'value', array['DAY', 'WEEK', 'MONTH']);

-- reactions per post and kind (👍 3, ❤️ 1): a counter keyed by two columns.
select statgate.define_counter('post_reaction_kinds', 'reactions', array['post_id', 'kind']);

-- live comments written by each user: a counter with a filter (soft-deleted ones drop out,
-- and come back when undeleted).
select statgate.define_counter('author_comment_counts', 'comments', array['author_id'], filter => 'not deleted');
