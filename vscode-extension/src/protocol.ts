/** The repo2lora names on top of LSP: the status request, the adapter notification and the
 * regenerate command. No `vscode` import, so the protocol test uses them as is. */

export const STATUS_REQUEST = "repo2lora/status";
export const ADAPTER_CHANGED = "repo2lora/adapterChanged";
export const REGENERATE_COMMAND = "repo2lora.regenerate";
