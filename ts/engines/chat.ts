/**
 * Shape checks of a conversation before it crosses the binding. Only JS types are checked here;
 * what a template accepts (roles, order) and the size limits are the core's.
 */
import { PhoenixError } from '../binding/errors.js';
import type { RawChatMessage } from '../binding/types.js';
import { refuseUnknownKeys } from './known-keys.js';
import type { ChatMessage } from './types.js';

const MESSAGE_KEYS: ReadonlySet<string> = new Set(['role', 'content']);

/** `messages` as the binding takes them: an array of `{ role, content }` strings. */

export function toRawMessages(messages: readonly ChatMessage[]): RawChatMessage[] {
  if (!Array.isArray(messages)) throw invalidMessages('must be an array of { role, content }');
  // Array.from visits holes (`[a, , b]`) as undefined, where map skipped them into the binding.
  return Array.from(messages, (m: unknown, i) => {
    if (m === null || typeof m !== 'object') throw invalidMessages(`[${i}] must be an object { role, content }`);
    // Fields a template would not see (`name`, `tool_calls`) are refused, not dropped without a word.
    refuseUnknownKeys(m, MESSAGE_KEYS, 'message field', `messages[${i}].`);
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string') throw invalidMessages(`[${i}].role must be a string`);
    if (typeof content !== 'string') throw invalidMessages(`[${i}].content must be a string`);
    return { role, content };
  });
}

function invalidMessages(problem: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `messages${problem.startsWith('[') ? '' : ' '}${problem}`, { option: 'messages' });
}
