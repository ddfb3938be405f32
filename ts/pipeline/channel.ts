/**
 * A single-consumer async queue: a producer pushes values and closes it; one `for await` reads them.
 */
export class AsyncChannel<T> implements AsyncIterable<T> {
  readonly #buffer: T[] = [];
  #closed = false;
  #wake: (() => void) | undefined;
  #iterated = false;

  push(value: T): void {
    if (this.#closed) return;
    this.#buffer.push(value);
    this.#wake?.();
  }

  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new Error('AsyncChannel can be iterated only once');
    this.#iterated = true;
    for (;;) {
      while (this.#buffer.length > 0) yield this.#buffer.shift() as T;
      if (this.#closed) return;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }
}
