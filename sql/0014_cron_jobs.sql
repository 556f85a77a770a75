/**
 * The scheduled jobs (pg_cron; times are UTC). Created only where pg_cron is
 * installed; `cron.schedule` replaces a job of the same name, so this file is
 * safe to apply again.
 *
 * - dispatch-recurring: daily at 02:00, the recurring-bookings dispatcher;
 * - calendar-sync: every minute, retries calendar deletions that failed;
 * - cleanup-job-history: daily, forgets pg_cron run details and HTTP answers
 *   older than 7 days (and, on plain PostgreSQL, the stand-in's sent requests).
 */

do $$
begin
  if not exists (select from pg_catalog.pg_namespace where nspname = 'cron') then
    raise notice 'pg_cron is not installed in this database; no jobs scheduled.';
    return;
  end if;
  -- Ten minutes: a dispatch of a million recurrences takes about two.
  perform cron.schedule('dispatch-recurring', '0 2 * * *',
    $job$select private.call_function('recurring-dispatcher', '{}'::jsonb, 600000)$job$);
  perform cron.schedule('calendar-sync', '* * * * *',
    $job$select private.call_function('calendar-sync')$job$);
  perform cron.schedule('cleanup-job-history', '17 3 * * *',
    $job$delete from cron.job_run_details where end_time < now() - interval '7 days';
         delete from net._http_response where created < now() - interval '7 days'$job$);
  -- pg_net empties its own request queue; the PL/Python stand-in (sql/0013) does not.
  if exists (select from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
             where p.pronamespace = 'net'::regnamespace and p.proname = 'http_post' and l.lanname = 'plpython3u') then
    -- The stand-in writes a request and its answer in one transaction: a request
    -- without an answer of the last week is done and forgotten.
    perform cron.schedule('cleanup-http-queue', '19 3 * * *',
      $job$delete from net.http_request_queue q
           where not exists (select 1 from net._http_response r
                             where r.id = q.id and r.created >= now() - interval '7 days')$job$);
  end if;
end
$$;
