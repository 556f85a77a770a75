/**
 * Pieces that only repeated others:
 *
 * - specialist_availability_exceptions_unavailable_idx had the columns of
 *   specialist_availability_exceptions_specialist_date_idx; the full index serves
 *   every lookup (booking-create's, the dispatcher's) and each write paid for both.
 * - The booking_reference default repeated the body of private.next_booking_reference();
 *   the default now calls the function, which drops its SET clause so PostgreSQL can
 *   inline it (the names in it are schema-qualified, and a SET would turn every
 *   insert into a function call; the dispatcher inserts 100,000 rows at once).
 * - private.visible_name was called by nothing: upcoming_sessions reads client
 *   names through private.my_upcoming_client_names, and private is not exposed.
 */

drop index public.specialist_availability_exceptions_unavailable_idx;

alter function private.next_booking_reference() reset search_path;
alter table public.sessions alter column booking_reference set default private.next_booking_reference();

drop function private.visible_name(uuid);
