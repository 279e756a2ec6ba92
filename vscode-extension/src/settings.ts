/** The extension's settings and what they become for the language server: the command line
 * of `repo2lora serve --stdio`, its `initializationOptions`, and the options it takes while
 * serving. No `vscode` import: the unit tests and the protocol test use this module as is. */

export interface ExtensionSettings {
  enable: boolean;
  serverPath: string; // a `repo2lora` executable; empty: `repo2lora` from PATH (or pythonPath)
  pythonPath: string; // an interpreter to run `-m repo2lora` with, when serverPath is empty
  model: string; // --model; empty: the server's default
  hypernetwork: string; // --hypernet; empty: the server's default
  debounceMs: number;
  maxNewTokens: number;
  languages: string[]; // language ids that get completions; "*" for all
  suggestionList: boolean; // also offer the completion in the suggestion list
}

export const DEFAULT_SETTINGS: ExtensionSettings = {
  enable: true,
  serverPath: "",
  pythonPath: "",
  model: "",
  hypernetwork: "",
  debounceMs: 25,
  maxNewTokens: 48,
  languages: ["python"],
  suggestionList: false,
};

// the server's limits (lsp_server/config.py); a value outside them would be ignored there
const DEBOUNCE_MS = { low: 0, high: 5000 };
const MAX_NEW_TOKENS = { low: 1, high: 4096 };

/** Settings from a `get(key)` lookup (VS Code's `WorkspaceConfiguration.get`), each value
 * checked: a wrong type falls back to the default, a number out of range is clamped. */
export function readSettings(get: (key: keyof ExtensionSettings) => unknown): ExtensionSettings {
  const text = (key: "serverPath" | "pythonPath" | "model" | "hypernetwork"): string => {
    const v = get(key);
    return typeof v === "string" ? v.trim() : DEFAULT_SETTINGS[key];
  };
  const flag = (key: "enable" | "suggestionList"): boolean => {
    const v = get(key);
    return typeof v === "boolean" ? v : DEFAULT_SETTINGS[key];
  };
  const integer = (key: "debounceMs" | "maxNewTokens", r: { low: number; high: number }) => {
    const v = get(key);
    if (typeof v !== "number" || !Number.isFinite(v)) {
      return DEFAULT_SETTINGS[key];
    }
    return Math.min(r.high, Math.max(r.low, Math.round(v)));
  };
  const langs = get("languages");
  const languages = Array.isArray(langs)
    ? langs.filter((l): l is string => typeof l === "string" && l.trim() !== "").map((l) => l.trim())
    : DEFAULT_SETTINGS.languages;
  return {
    enable: flag("enable"),
    serverPath: text("serverPath"),
    pythonPath: text("pythonPath"),
    model: text("model"),
    hypernetwork: text("hypernetwork"),
    debounceMs: integer("debounceMs", DEBOUNCE_MS),
    maxNewTokens: integer("maxNewTokens", MAX_NEW_TOKENS),
    languages,
    suggestionList: flag("suggestionList"),
  };
}

/** How to start the server. `source` says which setting chose the program, for messages. */
export interface ServerLaunch {
  command: string;
  args: string[];
  initializationOptions: RuntimeOptions;
  source: "serverPath" | "pythonPath" | "PATH";
}

/** The server options that may change while it serves (`workspace/didChangeConfiguration`). */
export interface RuntimeOptions {
  debounceMs: number;
  maxNewTokens: number;
}

const SERVER_EXECUTABLE = "repo2lora";

export function serverLaunch(s: ExtensionSettings): ServerLaunch {
  const serve = ["serve", "--stdio"];
  if (s.model) {
    serve.push("--model", s.model);
  }
  if (s.hypernetwork) {
    serve.push("--hypernet", s.hypernetwork);
  }
  const initializationOptions = runtimeOptions(s);
  if (s.serverPath) {
    return { command: s.serverPath, args: serve, initializationOptions, source: "serverPath" };
  }
  if (s.pythonPath) {
    const args = ["-m", "repo2lora", ...serve];
    return { command: s.pythonPath, args, initializationOptions, source: "pythonPath" };
  }
  return { command: SERVER_EXECUTABLE, args: serve, initializationOptions, source: "PATH" };
}

export function runtimeOptions(s: ExtensionSettings): RuntimeOptions {
  return { debounceMs: s.debounceMs, maxNewTokens: s.maxNewTokens };
}

/** A change the running server cannot take: it needs a restart (or a stop, when disabled). */
export function needsRestart(before: ExtensionSettings, after: ExtensionSettings): boolean {
  const launchKey = (s: ExtensionSettings) => {
    const launch = serverLaunch(s);
    return JSON.stringify([s.enable, launch.command, launch.args, [...s.languages].sort()]);
  };
  return launchKey(before) !== launchKey(after);
}

/** The documents that get completions: files on disk (the server reads the repository there)
 * of the configured languages. */
export function documentSelector(languages: string[]): { scheme: string; language?: string }[] {
  if (languages.length === 0 || languages.includes("*")) {
    return [{ scheme: "file" }];
  }
  return languages.map((language) => ({ scheme: "file", language }));
}
