-- the example application (docs/GUIDE.md shows a real one): posts with comments and reactions, post_stats kept exact
-- by statement-level triggers, and daily measurement rollups.
create table if not exists posts (
  id bigserial primary key,
  title text not null,
  author_id text not null,
  created_at timestamptz not null default now()
);

create table if not exists comments (
  id bigserial primary key,
  post_id bigint not null references posts(id) on delete cascade,
  author_id text not null,
  body text not null,
  deleted boolean not null default false,
  created_at timestamptz not null default now()
);
create index if not exists comments_post_id on comments (post_id);

create table if not exists reactions (
  id bigserial primary key,
  post_id bigint not null references posts(id) on delete cascade,
  user_id text not null,
  kind text not null,
  created_at timestamptz not null default now()
);
create index if not exists reactions_post_id on reactions (post_id);

create table if not exists post_stats (
  post_id bigint primary key references posts(id) on delete cascade,
  comment_count bigint not null default 0,
  reaction_count bigint not null default 0,
  updated_at timestamptz not null default now()
);

-- every post gets its stats row at birth, so counters start at 0 rather than null.
create or replace function post_stats_new_posts() returns trigger
language plpgsql as $$
begin
  insert into post_stats (post_id) select id from new_rows on conflict do nothing;
  return null;
end;
$$;
drop trigger if exists post_stats_new_posts on posts;
create trigger post_stats_new_posts after insert on posts
  referencing new table as new_rows for each statement execute function post_stats_new_posts();

-- applies one statement's delta per post in one set-based upsert. the delta is the number of
-- live rows per post after minus before, which covers insert, delete, soft delete, undelete
-- and a move to another post alike. posts whose delta is zero are not touched (no notify).
create or replace function post_stats_apply(counter text, deltas jsonb) returns void
language plpgsql as $$
begin
  execute format(
    'insert into post_stats (post_id, %1$I)
     select d.post_id, d.delta from jsonb_to_recordset($1) as d(post_id bigint, delta bigint)
     where d.delta <> 0 and exists (select 1 from posts p where p.id = d.post_id)
     on conflict (post_id) do update set %1$I = post_stats.%1$I + excluded.%1$I, updated_at = now()',
    counter) using deltas;
end;
$$;

create or replace function comments_stats() returns trigger
language plpgsql as $$
declare
  deltas jsonb;
begin
  if tg_op = 'INSERT' then
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', n)) into deltas
    from (select post_id, count(*) as n from new_rows where not deleted group by post_id) d;
  elsif tg_op = 'DELETE' then
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', -n)) into deltas
    from (select post_id, count(*) as n from old_rows where not deleted group by post_id) d;
  else
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', n)) into deltas
    from (select post_id, sum(n) as n from (
            select post_id, count(*) as n from new_rows where not deleted group by post_id
            union all
            select post_id, -count(*) from old_rows where not deleted group by post_id) u
          group by post_id) d;
  end if;
  if deltas is not null then
    perform post_stats_apply('comment_count', deltas);
  end if;
  return null;
end;
$$;

create or replace function reactions_stats() returns trigger
language plpgsql as $$
declare
  deltas jsonb;
begin
  if tg_op = 'INSERT' then
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', n)) into deltas
    from (select post_id, count(*) as n from new_rows group by post_id) d;
  elsif tg_op = 'DELETE' then
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', -n)) into deltas
    from (select post_id, count(*) as n from old_rows group by post_id) d;
  else
    select jsonb_agg(jsonb_build_object('post_id', post_id, 'delta', n)) into deltas
    from (select post_id, sum(n) as n from (
            select post_id, count(*) as n from new_rows group by post_id
            union all
            select post_id, -count(*) from old_rows group by post_id) u
          group by post_id) d;
  end if;
  if deltas is not null then
    perform post_stats_apply('reaction_count', deltas);
  end if;
  return null;
end;
$$;

drop trigger if exists comments_stats_ins on comments;
drop trigger if exists comments_stats_upd on comments;
drop trigger if exists comments_stats_del on comments;
create trigger comments_stats_ins after insert on comments
  referencing new table as new_rows for each statement execute function comments_stats();
create trigger comments_stats_upd after update on comments
  referencing old table as old_rows new table as new_rows for each statement execute function comments_stats();
create trigger comments_stats_del after delete on comments
  referencing old table as old_rows for each statement execute function comments_stats();

drop trigger if exists reactions_stats_ins on reactions;
drop trigger if exists reactions_stats_upd on reactions;
drop trigger if exists reactions_stats_del on reactions;
create trigger reactions_stats_ins after insert on reactions
  referencing new table as new_rows for each statement execute function reactions_stats();
create trigger reactions_stats_upd after update on reactions
  referencing old table as old_rows new table as new_rows for each statement execute function reactions_stats();
create trigger reactions_stats_del after delete on reactions
  referencing old table as old_rows for each statement execute function reactions_stats();

-- the drift check: posts whose stored counts differ from live count(*).
create or replace function post_stats_drift()
returns table (post_id bigint, stored_comments bigint, live_comments bigint, stored_reactions bigint, live_reactions bigint)
language sql stable as $$
  select p.id, s.comment_count, coalesce(c.n, 0), s.reaction_count, coalesce(r.n, 0)
  from posts p
  left join post_stats s on s.post_id = p.id
  left join (select comments.post_id, count(*) as n from comments where not deleted group by 1) c on c.post_id = p.id
  left join (select reactions.post_id, count(*) as n from reactions group by 1) r on r.post_id = p.id
  where s.post_id is null
     or s.comment_count is distinct from coalesce(c.n, 0)
     or s.reaction_count is distinct from coalesce(r.n, 0)
$$;

-- the full refresh: recomputes every drifted row; returns how many changed.
create or replace function refresh_post_stats() returns bigint
language plpgsql as $$
declare
  changed bigint;
begin
  insert into post_stats (post_id, comment_count, reaction_count)
  select d.post_id, d.live_comments, d.live_reactions from post_stats_drift() d
  on conflict (post_id) do update
    set comment_count = excluded.comment_count, reaction_count = excluded.reaction_count, updated_at = now();
  get diagnostics changed = row_count;
  return changed;
end;
$$;

-- measurements and their DAY rollups (bucket = the UTC date of taken_at).
create table if not exists measurements (
  id bigserial primary key,
  user_id text not null,
  type text not null,
  value double precision not null,
  taken_at timestamptz not null
);
create index if not exists measurements_user_type_taken on measurements (user_id, type, taken_at);

create table if not exists measurement_rollups (
  user_id text not null,
  type text not null,
  granularity text not null check (granularity in ('DAY')),
  bucket_start date not null,
  count bigint not null,
  sum double precision not null,
  min double precision,
  max double precision,
  primary key (user_id, type, granularity, bucket_start)
);

-- recomputes the buckets a statement touched from live rows: exact for insert, delete and
-- update alike (min/max included), and set-based, so one statement costs one pass.
create or replace function measurement_rollups_apply() returns trigger
language plpgsql as $$
begin
  create temp table if not exists statgate_touched_buckets (user_id text, type text, bucket_start date) on commit drop;
  truncate statgate_touched_buckets;
  if tg_op in ('INSERT', 'UPDATE') then
    insert into statgate_touched_buckets select distinct user_id, type, (taken_at at time zone 'UTC')::date from new_rows;
  end if;
  if tg_op in ('DELETE', 'UPDATE') then
    insert into statgate_touched_buckets select distinct user_id, type, (taken_at at time zone 'UTC')::date from old_rows;
  end if;
  delete from measurement_rollups r using statgate_touched_buckets t
  where r.user_id = t.user_id and r.type = t.type and r.granularity = 'DAY' and r.bucket_start = t.bucket_start
    and not exists (select 1 from measurements m where m.user_id = t.user_id and m.type = t.type
                    and m.taken_at >= t.bucket_start::timestamp at time zone 'UTC'
                    and m.taken_at < (t.bucket_start + 1)::timestamp at time zone 'UTC');
  insert into measurement_rollups (user_id, type, granularity, bucket_start, count, sum, min, max)
  select t.user_id, t.type, 'DAY', t.bucket_start, count(*), sum(m.value), min(m.value), max(m.value)
  from (select distinct * from statgate_touched_buckets) t
  join measurements m on m.user_id = t.user_id and m.type = t.type
   and m.taken_at >= t.bucket_start::timestamp at time zone 'UTC'
   and m.taken_at < (t.bucket_start + 1)::timestamp at time zone 'UTC'
  group by t.user_id, t.type, t.bucket_start
  on conflict (user_id, type, granularity, bucket_start) do update
    set count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max
    where (measurement_rollups.count, measurement_rollups.sum, measurement_rollups.min, measurement_rollups.max)
          is distinct from (excluded.count, excluded.sum, excluded.min, excluded.max);
  return null;
end;
$$;

drop trigger if exists measurement_rollups_ins on measurements;
drop trigger if exists measurement_rollups_upd on measurements;
drop trigger if exists measurement_rollups_del on measurements;
create trigger measurement_rollups_ins after insert on measurements
  referencing new table as new_rows for each statement execute function measurement_rollups_apply();
create trigger measurement_rollups_upd after update on measurements
  referencing old table as old_rows new table as new_rows for each statement execute function measurement_rollups_apply();
create trigger measurement_rollups_del after delete on measurements
  referencing old table as old_rows for each statement execute function measurement_rollups_apply();

create or replace function measurement_rollups_drift()
returns table (user_id text, type text, bucket_start date, stored_count bigint, live_count bigint)
language sql stable as $$
  with live as (
    select m.user_id, m.type, (m.taken_at at time zone 'UTC')::date as bucket_start, count(*) as n
    from measurements m group by 1, 2, 3)
  select coalesce(l.user_id, r.user_id), coalesce(l.type, r.type), coalesce(l.bucket_start, r.bucket_start), r.count, l.n
  from live l
  full join (select * from measurement_rollups where granularity = 'DAY') r
    on r.user_id = l.user_id and r.type = l.type and r.bucket_start = l.bucket_start
  where r.count is distinct from l.n
$$;

select statgate.watch('post_stats', array['post_id']);
select statgate.watch('measurement_rollups', array['user_id', 'type', 'bucket_start']);
