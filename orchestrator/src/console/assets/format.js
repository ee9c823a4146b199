// How numbers, times and conditions read on the pages.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB", as the CLI's report prints bytes. */
export function bytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit + 1 < UNITS.length) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** Seconds -> "1h02m", "3m04s", "12s". */
export function duration(seconds) {
  const s = Math.round(Number(seconds) || 0);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** An RFC 3339 time as the reader's local time of day (and date if not today). */
export function time(rfc3339) {
  if (!rfc3339) return '';
  const t = new Date(rfc3339);
  if (Number.isNaN(t.getTime())) return rfc3339;
  const today = new Date().toDateString() === t.toDateString();
  return today ? t.toLocaleTimeString() : t.toLocaleString();
}

/** Seconds between two RFC 3339 times (the second defaults to now). */
export function between(from, to) {
  if (!from) return null;
  const end = to ? new Date(to) : new Date();
  return Math.max(0, (end - new Date(from)) / 1000);
}

/** true/false/undefined -> "yes"/"no"/"—". */
export function yesNo(value) {
  if (value === true) return 'yes';
  if (value === false) return 'no';
  return '—';
}

/** The condition of `type` in an object's status, if any. */
export function condition(object, type) {
  return (object?.status?.conditions || []).find((c) => c.type === type);
}
