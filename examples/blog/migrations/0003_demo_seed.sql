-- demo data for the example application (used by demo mode; tests may call it too).
--
-- statgate_demo_seed() seeds only when posts is empty and returns the number of posts it
-- created (0 when the database already had data), so it is safe to call on every start-up.
-- the data is deterministic (no random()), so every demo looks the same:
--   30 posts; per post 1-6 comments (one in seven soft-deleted) and 0-7 reactions;
--   users 'alice' (the demo user), 'bob', 'carol'; 'steps' measurements, 1-4 a day over the
--   last 14 days (today included, UTC).
-- the stats tables are filled by the triggers of 0002, exactly as for application writes.

create or replace function statgate_demo_seed() returns integer
language plpgsql
set search_path from current
as $$
declare
  users constant text[] := array['alice', 'bob', 'carol'];
  today constant date := (now() at time zone 'UTC')::date;
  created integer;
begin
  -- two statgate nodes starting together must not both seed.
  perform pg_advisory_xact_lock(hashtext('statgate_demo_seed'));
  if exists (select 1 from posts) then
    return 0;
  end if;

  with new_posts as (
    insert into posts (title, author_id, created_at)
    select format('Demo post #%s', i), users[1 + i % 3], now() - make_interval(hours => 31 - i)
      from generate_series(1, 30) as i
     order by i
    returning id, created_at)
  select count(*) into created from new_posts;

  -- numbered per post (k), with authors and bodies cycling through the users.
  insert into comments (post_id, author_id, body, deleted, created_at)
  select p.id,
         users[1 + (p.rn + k) % 3],
         format('Comment %s on post %s', k, p.id),
         (p.rn * 7 + k) % 7 = 0,
         p.created_at + make_interval(mins => 5 * k)
    from (select id, created_at, row_number() over (order by id) as rn from posts) p
   cross join lateral generate_series(1, 1 + (p.rn * 5 % 6)::int) as k
   order by p.id, k;

  insert into reactions (post_id, user_id, kind, created_at)
  select p.id,
         users[1 + (p.rn + k) % 3],
         (array['like', 'love', 'laugh', 'wow'])[1 + (p.rn + k) % 4],
         p.created_at + make_interval(mins => 3 * k)
    from (select id, created_at, row_number() over (order by id) as rn from posts) p
   cross join lateral generate_series(1, (p.rn * 3 % 8)::int) as k
   order by p.id, k;

  -- steps: day 0 is today (UTC); values from a hash so they look irregular but are stable.
  -- today's readings are pulled back to just before now (but not before today's midnight).
  insert into measurements (user_id, type, value, taken_at)
  select u.name,
         'steps',
         (500 + abs(hashtext(u.name || ':' || d || ':' || k)) % 4000)::double precision,
         greatest((today - d)::timestamp at time zone 'UTC',
                  least((today - d)::timestamp at time zone 'UTC' + make_interval(hours => 7 + 3 * k),
                        now() - make_interval(mins => 10 * k)))
    from unnest(users) as u(name)
   cross join generate_series(0, 13) as d
   cross join lateral generate_series(1, 1 + abs(hashtext(u.name || ':' || d)) % 4) as k
   order by 1, 4;

  return created;
end;
$$;

comment on function statgate_demo_seed() is
  'seed the example application with demo data if posts is empty; returns the number of posts created';
