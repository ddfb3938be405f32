/**
 * Abort listeners, one per signal: every call watching a caller's `AbortSignal` subscribes here, and
 * the signal itself carries a single listener that relays to them. A server handing one shutdown
 * signal to many concurrent calls otherwise passed Node's 10-listener limit and printed a
 * MaxListenersExceededWarning (the listeners were removed as calls ended: a warning, not a leak).
 */
const subscribers = new WeakMap<AbortSignal, Set<() => void>>();

/** Calls `listener` once when `signal` aborts (as `addEventListener('abort', listener, { once: true })`). */
export function listenAbort(signal: AbortSignal, listener: () => void): void {
  let set = subscribers.get(signal);
  if (!set) {
    const created = new Set<() => void>();
    set = created;
    subscribers.set(signal, created);
    signal.addEventListener(
      'abort',
      () => {
        subscribers.delete(signal);
        for (const each of [...created]) each();
      },
      { once: true },
    );
  }
  set.add(listener);
}

/** Removes a listener added by {@link listenAbort} (a no-op when it already ran or was removed). */
export function unlistenAbort(signal: AbortSignal, listener: () => void): void {
  subscribers.get(signal)?.delete(listener);
}
