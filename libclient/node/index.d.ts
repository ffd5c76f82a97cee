// Types of the tollgate package (index.js, lib/fetch.js).

/** What one request costs; members left out: requests 1, tokens 0, images 0. */
export interface Cost {
  requests?: number | bigint;
  tokens?: number | bigint;
  images?: number | bigint;
}

export type AdviceValue = 'OK' | 'RETRY' | 'GIVE_UP';
export declare const Advice: Readonly<{ OK: 'OK'; RETRY: 'RETRY'; GIVE_UP: 'GIVE_UP' }>;

/** Header forms observe() takes. */
export type HeadersLike =
  | Headers
  | Map<string, string | string[]>
  | Record<string, string | string[] | number | undefined>
  | Array<[string, string]>
  | string[]
  | string
  | Uint8Array
  | null
  | undefined;

/** A libtollgate result below 0: code is the errno's name, errno the negative number. */
export declare class TollgateError extends Error {
  code: string;
  errno: number;
  detail?: string;
}

/** A key's handle, good across reloads until one removes the key. */
export declare class Key {
  readonly name: string;
  readonly handle: number;
}

/** One request's permission; release it when the request is done. */
export declare class Ticket {
  readonly key: Key;
  /** What it is charged with: taken, or as last settled. */
  readonly cost: { requests: number | bigint; tokens: number | bigint; images: number | bigint };
  readonly live: boolean;
  /** Tell the whole host what the response said; returns the advice. */
  observe(status: number, headers?: HeadersLike): AdviceValue;
  /** Charge what the request really used instead of the estimate. */
  settle(actual: Cost): void;
  /** Give back the concurrency leases; idempotent. */
  release(): void;
}

export interface WaitOptions {
  /** ms; none: forever */
  timeout?: number;
  signal?: AbortSignal;
}

export interface StatOptions {
  key?: string;
}

/** tollstat -j's JSON, schema 1 (tollstat(1)). */
export type Stat = { schema: number; [field: string]: any };

export declare class Client {
  readonly segment: string;
  key(name: string | Key): Key;
  tryTicket(key: string | Key, cost?: Cost): { ticket: Ticket | null; retryIn: number };
  /** Blocks the thread: for scripts and worker threads. */
  ticketSync(key: string | Key, cost?: Cost, options?: { timeout?: number }): Ticket;
  /** Waits without blocking the event loop. */
  ticket(key: string | Key, cost?: Cost, options?: WaitOptions): Promise<Ticket>;
  withTicket<T>(key: string | Key, cost: Cost | undefined, fn: (t: Ticket) => T | Promise<T>,
    options?: WaitOptions): Promise<T>;
  stat(options?: StatOptions): Promise<Stat>;
  statSync(options?: StatOptions): Stat;
  /** Resolves once the slot is freed. */
  close(): Promise<void>;
}

export declare function open(segment?: string): Client;
export declare function stat(segment?: string, options?: StatOptions): Promise<Stat>;
export declare function statSync(segment?: string, options?: StatOptions): Stat;
/** The libtollgate.so in use. */
export declare const library: string;
export declare function headerBlock(headers: HeadersLike): string;

/** The request as routing and cost functions see it. */
export interface RoutedRequest {
  url: URL;
  method: string;
  headers: Headers;
  /** The parsed JSON body, or null. */
  body: any;
}

type Match = string | RegExp | ((value: string) => boolean);

export interface Rule {
  host?: Match;
  path?: Match;
  model?: Match;
  key: string | ((req: RoutedRequest) => string | null);
}

export interface FetchOptions {
  client?: Client;
  segment?: string;
  key?: string | ((req: RoutedRequest) => string | null | undefined);
  rules?: Rule[];
  unmatched?: 'pass' | 'refuse';
  cost?: (req: RoutedRequest) => Cost;
  /** sends at most (default 3) */
  tries?: number;
  /** ms for each ticket */
  timeout?: number;
  fetch?: typeof globalThis.fetch;
  outputTokens?: number;
  streamUsage?: boolean;
}

/** A fetch for `new OpenAI({ fetch, maxRetries: 0 })` and `new Anthropic({ fetch, maxRetries: 0 })`. */
declare function tollgateFetch(options?: FetchOptions): typeof globalThis.fetch;
export { tollgateFetch as fetch };
