/** The keys a {@link ProcessingRequest} and its options may carry (anything else is refused by name). */
import { GENERATION_OPTION_KEYS } from '../engines/options.js';

/** Every field of a request. */
export const REQUEST_FIELDS: ReadonlySet<string> = new Set(['id', 'input', 'messages', 'taskType', 'modelPreference', 'mode', 'maxProcessingTime', 'energyBudget', 'options']);
/** Every request option: a generation's, and scoring's `returnLogits`. */
export const REQUEST_OPTION_KEYS: ReadonlySet<string> = new Set([...GENERATION_OPTION_KEYS, 'returnLogits']);
