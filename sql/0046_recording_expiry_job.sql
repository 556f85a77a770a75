/**
 * The recording-expiry job (pg_cron, UTC): daily at 03:41, the
 * `recording-expiry` function removes from Storage the recordings past their
 * `expires_at` and marks their rows (sql/0045_recordings.sql). A run that
 * Storage interrupts leaves the rest for the next one. Created only where
 * pg_cron is installed; `cron.schedule` replaces a job of the same name, so this
 * file is safe to apply again.
 */

do $$
begin
  if not exists (select from pg_catalog.pg_namespace where nspname = 'cron') then
    raise notice 'pg_cron is not installed in this database; recording-expiry not scheduled.';
    return;
  end if;
  -- Five minutes: Storage removes up to a thousand objects per call.
  perform cron.schedule('recording-expiry', '41 3 * * *',
    $job$select private.call_function('recording-expiry', '{}'::jsonb, 300000)$job$);
end
$$;
