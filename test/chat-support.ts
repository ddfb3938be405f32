/** The chat fixture model: llama-tiny plus a ChatML-style template (test/fixtures/chat-llama-tiny). */
import { copyFile } from 'node:fs/promises';
import path from 'node:path';

import { ROOT, copyModel } from './helpers.js';

export const LLAMA_TINY = path.join(ROOT, 'test/fixtures/llama-tiny');
const CHAT_CONFIG = path.join(ROOT, 'test/fixtures/chat-llama-tiny/tokenizer_config.json');

/** What the template renders for `messages` (written out here to check the core's rendering). */
export function chatml(messages: { role: string; content: string }[], addGenerationPrompt = true): string {
  const turns = messages.map((m) => `<|im_start|>${m.role}\n${m.content.trim()}<|padding|>\n`).join('');
  return turns + (addGenerationPrompt ? '<|im_start|>assistant\n' : '');
}

/** Copies llama-tiny to `to` with the chat template's tokenizer_config.json. */
export async function makeChatModel(to: string): Promise<string> {
  await copyModel(LLAMA_TINY, to);
  await copyFile(CHAT_CONFIG, path.join(to, 'tokenizer_config.json'));
  return to;
}

/** The template's end-of-turn token (`<|padding|>`) and EOS. */
export const END_OF_TURN_ID = 1;
export const EOS_ID = 0;
