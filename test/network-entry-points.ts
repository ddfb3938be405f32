/**
 * Node's network entry points besides a TCP connect — TLS, DNS, HTTP(S) and fetch — as
 * `[holder, key, label]`, for the offline tests to replace with traps.
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';

export function networkEntryPoints(): [object, string, string][] {
  const points: [object, string, string][] = [[tls, 'connect', 'tls.connect']];
  for (const fn of ['lookup', 'resolve', 'resolve4', 'resolve6', 'resolveAny', 'reverse', 'lookupService']) {
    points.push([dns, fn, `dns.${fn}`], [dns.promises, fn, `dns.promises.${fn}`]);
  }
  for (const [mod, name] of [
    [http, 'http'],
    [https, 'https'],
  ] as const) {
    points.push([mod, 'request', `${name}.request`], [mod, 'get', `${name}.get`]);
  }
  points.push([globalThis, 'fetch', 'fetch']);
  return points;
}
