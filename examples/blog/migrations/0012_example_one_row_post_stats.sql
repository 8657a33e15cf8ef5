-- post_stats: a statement of one row takes a short path (issue 18; docs/BENCHMARKS.md, "Writer
-- cost of a single-row write"). the one-post update of 0011 (an aggregate over the transition
-- table, joined to post_stats) cost about twice a row-level trigger's update, most of it in
-- starting its plan's many nodes. now the row's post and whether it counts are read into
-- variables (a scan of the transition table), a second row is looked for, and a lone row
-- updates its post's row by 1: three statements that start cheaply. every other statement (and
-- a post without its stats row) takes the set-based statements of 0011, which keep their rules.

create or replace function comments_stats() returns trigger
language plpgsql as $$
declare
  one_post bigint;
  one_live boolean;
  old_post bigint;
  old_live boolean;
  delta int;
begin
  if tg_op = 'INSERT' then
    select post_id, not deleted into one_post, one_live from new_rows;
    perform from new_rows offset 1;
    if not found then
      if one_live is not true then
        return null; -- no row, or a deleted one: no count changes
      end if;
      update post_stats set comment_count = comment_count + 1, updated_at = now() where post_id = one_post;
      if found then
        return null;
      end if;
    end if;
    insert into post_stats as s (post_id, comment_count)
    select d.post_id, d.n
    from (select post_id, count(*) as n from new_rows where not deleted group by post_id) d
    where exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set comment_count = s.comment_count + excluded.comment_count, updated_at = now();
  elsif tg_op = 'DELETE' then
    select post_id, not deleted into one_post, one_live from old_rows;
    perform from old_rows offset 1;
    if not found then
      if one_live is not true then
        return null;
      end if;
      update post_stats set comment_count = comment_count - 1, updated_at = now() where post_id = one_post;
      if found then
        return null;
      end if;
    end if;
    insert into post_stats as s (post_id, comment_count)
    select d.post_id, -d.n
    from (select post_id, count(*) as n from old_rows where not deleted group by post_id) d
    where exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set comment_count = s.comment_count + excluded.comment_count, updated_at = now();
  else
    select post_id, not deleted into old_post, old_live from old_rows;
    select post_id, not deleted into one_post, one_live from new_rows;
    perform from new_rows offset 1;
    if not found and one_post = old_post then
      -- one comment that stays on its post: an edit changes nothing, a (un)delete 1
      delta := case when one_live = old_live then 0 when one_live then 1 else -1 end;
      if delta = 0 then
        return null;
      end if;
      update post_stats set comment_count = comment_count + delta, updated_at = now() where post_id = one_post;
      if found then
        return null;
      end if;
    end if;
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
declare
  one_post bigint;
  old_post bigint;
begin
  if tg_op = 'INSERT' then
    select post_id into one_post from new_rows;
    perform from new_rows offset 1;
    if not found then
      update post_stats set reaction_count = reaction_count + 1, updated_at = now() where post_id = one_post;
      if found or one_post is null then
        return null;
      end if;
    end if;
    insert into post_stats as s (post_id, reaction_count)
    select d.post_id, d.n
    from (select post_id, count(*) as n from new_rows group by post_id) d
    where exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set reaction_count = s.reaction_count + excluded.reaction_count, updated_at = now();
  elsif tg_op = 'DELETE' then
    select post_id into one_post from old_rows;
    perform from old_rows offset 1;
    if not found then
      update post_stats set reaction_count = reaction_count - 1, updated_at = now() where post_id = one_post;
      if found or one_post is null then
        return null;
      end if;
    end if;
    insert into post_stats as s (post_id, reaction_count)
    select d.post_id, -d.n
    from (select post_id, count(*) as n from old_rows group by post_id) d
    where exists (select 1 from posts p where p.id = d.post_id)
    order by d.post_id
    on conflict (post_id) do update set reaction_count = s.reaction_count + excluded.reaction_count, updated_at = now();
  else
    select post_id into old_post from old_rows;
    select post_id into one_post from new_rows;
    perform from new_rows offset 1;
    if not found and one_post = old_post then
      return null; -- a reaction that stays on its post changes no count
    end if;
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
