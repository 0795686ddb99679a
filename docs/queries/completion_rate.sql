-- Completion rate per title and country, for titles released within 6 months.
--
--   sandbox sql --file docs/queries/completion_rate.sql          (add --json for scripts)
--
-- Definition (a Netflix data-engineering interview prompt), over the lake's views:
--   * titles released within 6 months of the as-of date: as_of - 6 months <= release_date < as_of;
--   * their playback_events before the as-of date (event_time < as_of, UTC);
--   * watch share of a viewer (profile_id) = total watched_ms / runtime_ms of the title;
--   * a completion: watch share > 0.9 (strictly);
--   * completion rate per (title, country) = completions / distinct viewers.
--
-- The as-of date is the one parameter, set in `params` below; edit it there. It is an explicit
-- date, not current_date, so the same lake gives the same numbers tomorrow (the test of this
-- file, tests/pipeline/lake/test_lake_sql.py, relies on it) and events that arrive after
-- the as-of date change nothing. 2026-11-23 is the Monday after ISO week 2026-W47.
--
-- The edge cases an interviewer asks about:
--   1. Several sessions of one viewer: watched_ms is summed per (viewer, title, country) over
--      all of the viewer's sessions before the share is taken, so two half-watches make one
--      completion and the viewer counts once in the denominator, however many sessions.
--   2. Series vs films: a TV title is one season and its runtime_ms is the whole season's, so
--      a TV completion means > 90% of the season, not of an episode; TV rates run lower than
--      FILM rates and are not comparable with them: the output keeps the category and sorts
--      by it, compare within one category.
--   3. Rewatching: the share is watch time, so it can pass 1.0 (a rewatch, or seeking back).
--      It is not capped for the completion test (a cap at 1.0 would not change "> 0.9") and a
--      viewer completes at most once: a rewatch is not a second completion. avg_watch_share
--      caps each viewer's share at 1.0, so one viewer's five rewatches do not lift the average.
--      The limit of watch time: watching the first half twice also reads as 1.0; coverage
--      (distinct positions, from position_ms) would tell them apart, at a higher cost.
--   4. Client retries: the lake keeps duplicate events (same event_id, another Kafka offset);
--      each event_id counts once here.
--   5. A viewer watching in two countries counts in each, with what they watched there.
--   6. As in the weekly Top-10, a (title, country) where the title is not available
--      (titles.countries) is left out, as are titles the titles table does not know and
--      events with a negative watched_ms (invalid: the stream job dead-letters them).
--      A viewer who pressed play and watched nothing (watched_ms 0) is a viewer with share 0.
WITH params AS (
    SELECT DATE '2026-11-23' AS as_of
), recent_titles AS (
    SELECT t.title_id, t.name, t.category, t.runtime_ms, t.release_date, t.countries
    FROM titles t, params p
    WHERE t.release_date >= CAST(p.as_of - INTERVAL 6 MONTH AS DATE)
      AND t.release_date < p.as_of
), events AS (
    -- one row per event_id (edge case 4), before the as-of date
    SELECT DISTINCT ON (e.event_id) e.event_id, e.profile_id, e.title_id, e.country, e.watched_ms
    FROM playback_events e, params p
    WHERE e.event_time < p.as_of AND e.watched_ms >= 0
    ORDER BY e.event_id, e.kafka_partition, e.kafka_offset
), per_viewer AS (
    -- every session of a viewer, summed (edge case 1)
    SELECT e.title_id, e.country, e.profile_id, sum(e.watched_ms) AS watched_ms
    FROM events e
    GROUP BY e.title_id, e.country, e.profile_id
), shares AS (
    SELECT t.title_id, t.name, t.category, t.release_date, v.country, v.profile_id,
           v.watched_ms / t.runtime_ms AS watch_share,
           v.watched_ms * 10 > t.runtime_ms * 9 AS completed  -- share > 0.9, in integers
    FROM per_viewer v
    JOIN recent_titles t ON t.title_id = v.title_id
    WHERE list_contains(t.countries, v.country)  -- edge case 6
)
SELECT title_id,
       name AS title_name,
       category,
       release_date,
       country,
       count(*) AS viewers,  -- one row per viewer: distinct viewers
       count(*) FILTER (WHERE completed) AS completions,
       round(count(*) FILTER (WHERE completed) / count(*), 4) AS completion_rate,
       round(avg(least(watch_share, 1.0)), 4) AS avg_watch_share  -- capped (edge case 3)
FROM shares
GROUP BY title_id, name, category, release_date, country
ORDER BY category, country, completion_rate DESC, title_id;
