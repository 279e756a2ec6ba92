/** The server's status (`repo2lora/status`, `repo2lora/adapterChanged`) as the editor shows it:
 * a tolerant reading of the payload, the staleness rules, the status bar text, and the lines
 * of the status view. No `vscode` import: unit-tested without an editor. */

export interface AdapterStatus {
  repository: string | null;
  head: string | null;
  adapter: {
    version: number;
    commit: string | null;
    worktree: boolean; // saved, uncommitted edits are folded in
    source: string; // "stored", "update", "regenerate" or "none"
    ageSeconds: number | null; // since the adapter was installed
    upToDate: boolean;
  };
  update: {
    running: boolean;
    pending: boolean;
    runs: number;
    lastError: string | null;
    lastSeconds: number | null;
    lastSteps: number | null;
  };
  model: {
    ready: boolean;
    error: string | null; // why the model could not be loaded (not sent by every server version)
    description: string;
    untrained: boolean;
    hypernet: string;
    hypernetUntrained: boolean;
  };
  completions: {
    requests: number;
    modelRuns: number;
    cacheHits: number;
    lastModelSeconds: number | null;
  };
}

type Json = Record<string, unknown>;

const obj = (v: unknown): Json => (v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const str = (v: unknown): string | null => (typeof v === "string" && v !== "" ? v : null);
const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const bool = (v: unknown): boolean => v === true;

/** The payload read field by field: a field the server does not send reads as unknown
 * (null, false, 0), never as an exception. */
export function parseStatus(payload: unknown): AdapterStatus {
  const p = obj(payload);
  const a = obj(p.adapter);
  const u = obj(p.update);
  const last = obj(u.last);
  const m = obj(p.model);
  const c = obj(p.completions);
  const head = str(p.head);
  const commit = str(a.commit);
  return {
    repository: str(p.repository),
    head,
    adapter: {
      version: num(a.version) ?? 0,
      commit,
      worktree: bool(a.worktree),
      source: str(a.source) ?? "none",
      ageSeconds: num(a.age_seconds),
      upToDate: typeof a.up_to_date === "boolean" ? a.up_to_date : commit !== null && commit === head,
    },
    update: {
      running: bool(u.running),
      pending: bool(u.pending),
      runs: num(u.runs) ?? 0,
      lastError: str(u.last_error),
      lastSeconds: num(last.seconds),
      lastSteps: num(last.steps),
    },
    model: {
      ready: bool(m.ready),
      error: str(m.error),
      description: str(m.description) ?? str(m.spec) ?? "unknown model",
      untrained: bool(m.untrained),
      hypernet: str(m.hypernet) ?? "unknown hypernetwork",
      hypernetUntrained: bool(m.hypernet_untrained),
    },
    completions: {
      requests: num(c.requests) ?? 0,
      modelRuns: num(c.model_runs) ?? 0,
      cacheHits: (num(c.cache_hits) ?? 0) + (num(c.typed_along_hits) ?? 0),
      lastModelSeconds: num(c.last_model_seconds),
    },
  };
}

/** Where the extension's connection to the server is. */
export type ServerState = "disabled" | "starting" | "running" | "stopped";

/** What the status bar says, in order of precedence:
 * - `down`: the server is not running, not answering, or could not load its model;
 * - `loading`: the server runs but its model is still loading;
 * - `no-repository`: the workspace is not in a git repository, completions use the base model;
 * - `updating`: an adapter update is running or queued;
 * - `stale`: the last update failed, there are no commits, no adapter yet, or the adapter is
 *   for another commit than HEAD (and no update is under way to fix it);
 * - `current`: the adapter is HEAD's. */
export type Health = "disabled" | "down" | "loading" | "no-repository" | "updating" | "stale" | "current";

export interface Assessment {
  health: Health;
  reason: string;
}

export function shortSha(sha: string | null | undefined): string {
  return sha ? sha.slice(0, 7) : "none";
}

/** What the extension knows at one moment. */
export interface Observed {
  state: ServerState;
  status?: AdapterStatus; // the latest the server sent
  elapsedMs: number; // since `status` arrived
  down?: string; // why the server is not serving, when it is not
  regenerating?: boolean; // a Regenerate command is in flight
}

export function assess(o: Observed): Assessment {
  const { state, status, down } = o;
  if (state === "disabled") {
    return { health: "disabled", reason: "repo2lora is disabled (setting repo2lora.enable)" };
  }
  if (state === "stopped" || down) {
    return { health: "down", reason: down ?? "the server is not running" };
  }
  if (state === "starting" || status === undefined) {
    return { health: "loading", reason: "the server is starting" };
  }
  if (status.model.error) {
    return { health: "down", reason: `the model could not be loaded: ${status.model.error}` };
  }
  if (!status.model.ready) {
    return { health: "loading", reason: `loading ${status.model.description}` };
  }
  if (status.repository === null) {
    return {
      health: "no-repository",
      reason: "the workspace is not inside a git repository; completions use the base model",
    };
  }
  if (status.update.running || status.update.pending || o.regenerating) {
    return { health: "updating", reason: `updating the adapter to HEAD ${shortSha(status.head)}` };
  }
  if (status.update.lastError) {
    return { health: "stale", reason: `the last adapter update failed: ${status.update.lastError}` };
  }
  if (status.head === null) {
    return { health: "stale", reason: "the repository has no commits yet; commit to get an adapter" };
  }
  if (status.adapter.commit === null) {
    return { health: "stale", reason: "no adapter yet; completions use the base model" };
  }
  if (!status.adapter.upToDate) {
    return {
      health: "stale",
      reason: `the adapter is for ${shortSha(status.adapter.commit)} but HEAD is ${shortSha(status.head)}`,
    };
  }
  return { health: "current", reason: `the adapter is HEAD's (${shortSha(status.head)})` };
}

/** "now", "42s", "5m", "3h", "2d". */
export function formatAge(seconds: number | null): string {
  if (seconds === null || seconds < 0) {
    return "";
  }
  if (seconds < 5) {
    return "now";
  }
  const units: [number, string][] = [[86400, "d"], [3600, "h"], [60, "m"]];
  for (const [size, unit] of units) {
    if (seconds >= size) {
      return `${Math.floor(seconds / size)}${unit}`;
    }
  }
  return `${Math.floor(seconds)}s`;
}

/** The adapter's age now, from the age the server reported `elapsedMs` ago. */
export function ageNow(status: AdapterStatus, elapsedMs: number): number | null {
  const age = status.adapter.ageSeconds;
  return age === null ? null : age + Math.max(0, elapsedMs) / 1000;
}

export interface StatusBarView {
  text: string; // with $(icon) codicons
  tooltip: string;
  warning: boolean; // shown on the warning background
}

/** The status bar item: the adapter's commit and age, a spinner while it is being made, the
 * warning colour when it is stale or the server is down. */
export function statusBarView(o: Observed): StatusBarView {
  const { status, elapsedMs } = o;
  const { health, reason } = assess(o);
  const click = "Click for the status and the commands.";
  const commit = status?.adapter.commit ? shortSha(status.adapter.commit) + (status.adapter.worktree ? "+" : "") : "";
  const age = status ? formatAge(ageNow(status, elapsedMs)) : "";
  const adapterText = [commit, age].filter(Boolean).join(" · ");
  const tip = (lines: string[]) => ["repo2lora", ...lines, click].join("\n");
  switch (health) {
    case "disabled":
      return { text: "$(circle-slash) repo2lora", tooltip: tip([reason]), warning: false };
    case "down":
      return { text: "$(debug-disconnect) repo2lora", tooltip: tip([reason]), warning: true };
    case "loading":
      return { text: "$(sync~spin) repo2lora", tooltip: tip([reason]), warning: false };
    case "no-repository":
      return { text: "$(circle-slash) repo2lora: no repo", tooltip: tip([reason]), warning: false };
    case "updating":
      return {
        text: `$(sync~spin) ${adapterText || "repo2lora"}`,
        tooltip: tip([reason, ...adapterLines(status!, elapsedMs)]),
        warning: false,
      };
    case "stale":
      return {
        text: `$(warning) ${adapterText || "repo2lora"}`,
        tooltip: tip([reason, ...adapterLines(status!, elapsedMs)]),
        warning: true,
      };
    default:
      return {
        text: `$(git-commit) ${adapterText}`,
        tooltip: tip(adapterLines(status!, elapsedMs)),
        warning: false,
      };
  }
}

function adapterLines(s: AdapterStatus, elapsedMs: number): string[] {
  if (!s.adapter.commit) {
    return [];
  }
  const age = formatAge(ageNow(s, elapsedMs));
  const wt = s.adapter.worktree ? ", with saved uncommitted edits" : "";
  return [`adapter: commit ${shortSha(s.adapter.commit)}${wt}, version ${s.adapter.version}${age ? `, made ${agoText(age)}` : ""}`];
}

/** A `formatAge` text as a time in the past: "just now", "5m ago". */
function agoText(age: string): string {
  return age === "now" ? "just now" : `${age} ago`;
}

/** The status view's "Last update" value. */
function lastUpdateText(u: AdapterStatus["update"]): string {
  if (u.lastError) {
    return `failed: ${u.lastError}`;
  }
  if (u.lastSeconds !== null) {
    return `${u.lastSteps ?? 0} commit step(s) in ${u.lastSeconds.toFixed(2)}s (${u.runs} run(s))`;
  }
  return u.running ? "running" : "none yet";
}

export interface StatusLine {
  label: string;
  value: string;
}

/** The status view: one line per thing a user asks about. */
export function statusLines(o: Observed): StatusLine[] {
  const { status, elapsedMs } = o;
  const { reason } = assess(o);
  const lines: StatusLine[] = [{ label: "State", value: reason }];
  if (!status) {
    return lines;
  }
  const s = status;
  const age = formatAge(ageNow(s, elapsedMs));
  lines.push(
    { label: "Repository", value: s.repository ?? "none" },
    { label: "HEAD", value: s.head ? shortSha(s.head) : "none" },
    {
      label: "Adapter",
      value: s.adapter.commit
        ? `${shortSha(s.adapter.commit)}${s.adapter.worktree ? " + saved edits" : ""} (version ${s.adapter.version}, ${s.adapter.source}${age ? `, ${agoText(age)}` : ""})`
        : "none",
    },
    { label: "Last update", value: lastUpdateText(s.update) },
    { label: "Model", value: s.model.description + (s.model.untrained ? " (untrained)" : "") },
    { label: "Hypernetwork", value: s.model.hypernet + (s.model.hypernetUntrained ? " (untrained)" : "") },
    {
      label: "Completions",
      value:
        `${s.completions.requests} requests, ${s.completions.modelRuns} model runs, ${s.completions.cacheHits} from cache` +
        (s.completions.lastModelSeconds !== null ? `, last took ${s.completions.lastModelSeconds.toFixed(2)}s` : ""),
    },
  );
  return lines;
}

/** How often to ask for the status (ms; 0: do not ask): often while something is changing or
 * the running server did not answer, rarely when all is current, never when it is not running. */
export function pollIntervalMs(o: Observed): number {
  if (o.state === "disabled" || o.state === "stopped") {
    return 0;
  }
  switch (assess(o).health) {
    case "down": // running, but the last status request failed
      return 2000;
    case "loading":
    case "updating":
    case "stale":
      return 1000;
    default:
      return 5000;
  }
}
