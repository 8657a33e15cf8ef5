-- post_stats kept by static sql (issue 18; docs/BENCHMARKS.md, "Writer cost of a single-row
-- write"). the triggers of 0002 built each statement's delta as jsonb and applied it through
-- post_stats_apply's execute format(...), parsed and planned again on every statement. the same
-- rules, now in plain sql whose plans postgresql keeps for the session:
--   * the delta of a statement is, per post, its live (not deleted) rows after minus before:
--     inserts, deletes, soft deletes, undeletes and moves to another post alike;
--   * a post whose delta is 0 is not touched (so its watch does not fire for it);
--   * a post's stats row exists from its birth (post_stats_new_posts); a post without one gets
--     it, with the delta, if the post exists;
--   * a statement whose live rows are all on one post (every single-row write) is one update of
--     that post's row; any other statement is one upsert, in post order, so that concurrent
--     statements lock rows in one order.

create or replace function comments_stats() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    update post_stats s set comment_count = s.comment_count + d.n, updated_at = now()
    from (select min(post_id) as post_id, count(*) as n from new_rows where not deleted
          having min(post_id) = max(post_id)) d
    where s.post_id = d.post_id;
    if not found then
      insert into post_stats as s (post_id, comment_count)
      select d.post_id, d.n
      from (select post_id, count(*) as n from new_rows where not deleted group by post_id) d
      where exists (select 1 from posts p where p.id = d.post_id)
      order by d.post_id
      on conflict (post_id) do update set comment_count = s.comment_count + excluded.comment_count, updated_at = now();
    end if;
  elsif tg_op = 'DELETE' then
    update post_stats s set comment_count = s.comment_count - d.n, updated_at = now()
    from (select min(post_id) as post_id, count(*) as n from old_rows where not deleted
          having min(post_id) = max(post_id)) d
    where s.post_id = d.post_id;
    if not found then
      insert into post_stats as s (post_id, comment_count)
      select d.post_id, -d.n
      from (select post_id, count(*) as n from old_rows where not deleted group by post_id) d
      where exists (select 1 from posts p where p.id = d.post_id)
      order by d.post_id
      on conflict (post_id) do update set comment_count = s.comment_count + excluded.comment_count, updated_at = now();
    end if;
  else
    -- an edit that neither moves, deletes nor undeletes a comment changes no count.
    if not exists (select from (select post_id, 1 as n from new_rows where not deleted
                                union all
                                select post_id, -1 from old_rows where not deleted) u
                   group by post_id having sum(n) <> 0) then
      return null;
    end if;
    insert into post_stats as s (post_id, comment_count)
    select d.post_id, d.n
    from (select post_id, sum(n) as n
          from (select post_id, 1 as n from new_rows where not deleted
                union all
                select post_id, -1 from old_rows where not deleted) u
          group by post_id) d
    where d.n <> 0 and exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set comment_count = s.comment_count + excluded.comment_count, updated_at = now();
  end if;
  return null;
end;
$$;

create or replace function reactions_stats() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    update post_stats s set reaction_count = s.reaction_count + d.n, updated_at = now()
    from (select min(post_id) as post_id, count(*) as n from new_rows having min(post_id) = max(post_id)) d
    where s.post_id = d.post_id;
    if not found then
      insert into post_stats as s (post_id, reaction_count)
      select d.post_id, d.n
      from (select post_id, count(*) as n from new_rows group by post_id) d
      where exists (select 1 from posts p where p.id = d.post_id)
      order by d.post_id
      on conflict (post_id) do update set reaction_count = s.reaction_count + excluded.reaction_count, updated_at = now();
    end if;
  elsif tg_op = 'DELETE' then
    update post_stats s set reaction_count = s.reaction_count - d.n, updated_at = now()
    from (select min(post_id) as post_id, count(*) as n from old_rows having min(post_id) = max(post_id)) d
    where s.post_id = d.post_id;
    if not found then
      insert into post_stats as s (post_id, reaction_count)
      select d.post_id, -d.n
      from (select post_id, count(*) as n from old_rows group by post_id) d
      where exists (select 1 from posts p where p.id = d.post_id)
      order by d.post_id
      on conflict (post_id) do update set reaction_count = s.reaction_count + excluded.reaction_count, updated_at = now();
    end if;
  else
    -- reactions that stay on their posts change no count.
    if not exists (select from (select post_id, 1 as n from new_rows union all select post_id, -1 from old_rows) u
                   group by post_id having sum(n) <> 0) then
      return null;
    end if;
    insert into post_stats as s (post_id, reaction_count)
    select d.post_id, d.n
    from (select post_id, sum(n) as n
          from (select post_id, 1 as n from new_rows union all select post_id, -1 from old_rows) u
          group by post_id) d
    where d.n <> 0 and exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set reaction_count = s.reaction_count + excluded.reaction_count, updated_at = now();
  end if;
  return null;
end;
$$;

-- nothing calls it any more.
drop function if exists post_stats_apply(text, jsonb);
