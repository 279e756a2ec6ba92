import * as assert from "assert";
import {
  AdapterStatus,
  ageNow,
  assess,
  formatAge,
  Observed,
  parseStatus,
  pollIntervalMs,
  statusBarView,
  statusLines,
} from "../../src/adapterStatus";

const HEAD = "3f1c2a9b7d10e4f5a6b7c8d9e0f1a2b3c4d5e6f7";
const OLD = "aaaaaaa1111111111111111111111111111111111";

/** A payload as `Session.status()` sends it. */
function payload(extra: { adapter?: object; update?: object; model?: object; head?: string | null; repository?: string | null } = {}) {
  return {
    workspace: ["/src/proj"],
    repository: "repository" in extra ? extra.repository : "/src/proj",
    head: "head" in extra ? extra.head : HEAD,
    adapter: {
      version: 2,
      commit: HEAD,
      worktree: false,
      source: "update",
      path: "/src/proj/.repo2lora/adapters/evo-x",
      age_seconds: 300,
      up_to_date: true,
      lora_mode: "merged",
      swap_seconds: {},
      ...extra.adapter,
    },
    update: { running: false, pending: false, runs: 1, last: { target: HEAD, steps: 1, seconds: 0.25, worktree_chunks: 0, finished_at: 1 }, last_error: null, ...extra.update },
    model: { ready: true, spec: "tiny-random", description: "tiny Llama", untrained: true, hypernet: "seeded", hypernet_untrained: true, threads: 1, ...extra.model },
    completions: { requests: 5, model_runs: 3, cache_hits: 1, typed_along_hits: 1, last_model_seconds: 0.123 },
  };
}

const running = (status: AdapterStatus, extra: Partial<Observed> = {}): Observed => ({ state: "running", status, elapsedMs: 0, ...extra });

describe("reading the status payload", function () {
  it("reads every field the server sends", function () {
    const s = parseStatus(payload());
    assert.strictEqual(s.repository, "/src/proj");
    assert.deepStrictEqual(s.adapter, { version: 2, commit: HEAD, worktree: false, source: "update", ageSeconds: 300, upToDate: true });
    assert.deepStrictEqual(s.update, { running: false, pending: false, runs: 1, lastError: null, lastSeconds: 0.25, lastSteps: 1 });
    assert.strictEqual(s.completions.cacheHits, 2);
    assert.strictEqual(s.model.description, "tiny Llama");
  });

  it("reads a missing or malformed payload as unknown, without throwing", function () {
    for (const p of [undefined, null, 3, "x", [], {}, { adapter: 5, update: [], model: null }]) {
      const s = parseStatus(p);
      assert.strictEqual(s.adapter.commit, null);
      assert.strictEqual(s.adapter.upToDate, false);
      assert.strictEqual(s.model.ready, false);
      assert.strictEqual(s.update.running, false);
    }
  });

  it("works out up-to-date from the commits when the server does not say", function () {
    const p = payload();
    delete (p.adapter as Record<string, unknown>).up_to_date;
    assert.strictEqual(parseStatus(p).adapter.upToDate, true);
    assert.strictEqual(parseStatus({ ...p, head: OLD }).adapter.upToDate, false);
  });
});

describe("staleness rules", function () {
  const health = (o: Observed) => assess(o).health;

  it("is current when the adapter is HEAD's", function () {
    assert.strictEqual(health(running(parseStatus(payload()))), "current");
  });

  it("is stale when the adapter is for another commit, with both commits named", function () {
    const a = assess(running(parseStatus(payload({ head: OLD, adapter: { up_to_date: false } }))));
    assert.strictEqual(a.health, "stale");
    assert.match(a.reason, /for 3f1c2a9 but HEAD is aaaaaaa/);
  });

  it("is updating, not stale, while an update runs, is queued or a regenerate is in flight", function () {
    const behind = { head: OLD, adapter: { up_to_date: false } };
    assert.strictEqual(health(running(parseStatus(payload({ ...behind, update: { running: true } })))), "updating");
    assert.strictEqual(health(running(parseStatus(payload({ ...behind, update: { pending: true } })))), "updating");
    assert.strictEqual(health(running(parseStatus(payload()), { regenerating: true })), "updating");
  });

  it("is stale when the last update failed, even on HEAD's commit", function () {
    const a = assess(running(parseStatus(payload({ update: { last_error: "disk full" } }))));
    assert.deepStrictEqual(a, { health: "stale", reason: "the last adapter update failed: disk full" });
  });

  it("is stale with no adapter yet or no commits", function () {
    assert.strictEqual(health(running(parseStatus(payload({ adapter: { commit: null, up_to_date: false } })))), "stale");
    assert.match(assess(running(parseStatus(payload({ head: null })))).reason, /no commits/);
  });

  it("says so when there is no repository", function () {
    assert.strictEqual(health(running(parseStatus(payload({ repository: null, head: null })))), "no-repository");
  });

  it("is loading while the server starts or loads its model", function () {
    assert.strictEqual(health({ state: "starting", elapsedMs: 0 }), "loading");
    assert.strictEqual(health({ state: "running", elapsedMs: 0 }), "loading");
    assert.strictEqual(health(running(parseStatus(payload({ model: { ready: false } })))), "loading");
  });

  it("is down when the model could not be loaded", function () {
    const a = assess(running(parseStatus(payload({ model: { ready: false, error: "out of memory" } }))));
    assert.deepStrictEqual(a, { health: "down", reason: "the model could not be loaded: out of memory" });
  });

  it("is down when stopped or not answering, with the reason", function () {
    assert.deepStrictEqual(assess({ state: "stopped", elapsedMs: 0, down: "not on PATH" }), { health: "down", reason: "not on PATH" });
    assert.strictEqual(health(running(parseStatus(payload()), { down: "timed out" })), "down");
    assert.strictEqual(health({ state: "disabled", elapsedMs: 0 }), "disabled");
  });
});

describe("status formatting", function () {
  it("formats ages briefly", function () {
    assert.deepStrictEqual(
      [null, -1, 0, 4.9, 42, 60, 300, 3599, 7200, 2 * 86400 + 5].map(formatAge),
      ["", "", "now", "now", "42s", "1m", "5m", "59m", "2h", "2d"],
    );
  });

  it("ages the adapter by the time since the status arrived", function () {
    assert.strictEqual(ageNow(parseStatus(payload()), 60_000), 360);
    assert.strictEqual(ageNow(parseStatus(payload({ adapter: { age_seconds: null } })), 60_000), null);
  });

  it("shows the adapter's short commit and age when current", function () {
    const v = statusBarView(running(parseStatus(payload()), { elapsedMs: 60_000 }));
    assert.strictEqual(v.text, "$(git-commit) 3f1c2a9 · 6m");
    assert.strictEqual(v.warning, false);
    assert.match(v.tooltip, /commit 3f1c2a9, version 2, made 6m ago/);
  });

  it("marks an adapter with saved uncommitted edits", function () {
    const v = statusBarView(running(parseStatus(payload({ adapter: { worktree: true } }))));
    assert.strictEqual(v.text, "$(git-commit) 3f1c2a9+ · 5m");
    assert.match(v.tooltip, /saved uncommitted edits/);
  });

  it("spins while updating and warns when stale or down", function () {
    const updating = statusBarView(running(parseStatus(payload({ update: { running: true } }))));
    assert.strictEqual(updating.text, "$(sync~spin) 3f1c2a9 · 5m");
    assert.strictEqual(updating.warning, false);
    const stale = statusBarView(running(parseStatus(payload({ head: OLD, adapter: { up_to_date: false } }))));
    assert.strictEqual(stale.text, "$(warning) 3f1c2a9 · 5m");
    assert.strictEqual(stale.warning, true);
    assert.match(stale.tooltip, /HEAD is aaaaaaa/);
    const down = statusBarView({ state: "stopped", elapsedMs: 0, down: "repo2lora: not on PATH" });
    assert.strictEqual(down.text, "$(debug-disconnect) repo2lora");
    assert.strictEqual(down.warning, true);
    assert.match(down.tooltip, /not on PATH/);
  });

  it("lists the status for the status view", function () {
    const lines = statusLines(running(parseStatus(payload())));
    const byLabel = Object.fromEntries(lines.map((l) => [l.label, l.value]));
    assert.strictEqual(byLabel.State, "the adapter is HEAD's (3f1c2a9)");
    assert.strictEqual(byLabel.Adapter, "3f1c2a9 (version 2, update, 5m ago)");
    assert.strictEqual(byLabel["Last update"], "1 commit step(s) in 0.25s (1 run(s))");
    assert.strictEqual(byLabel.Model, "tiny Llama (untrained)");
    assert.strictEqual(byLabel.Completions, "5 requests, 3 model runs, 2 from cache, last took 0.12s");
    assert.deepStrictEqual(statusLines({ state: "stopped", elapsedMs: 0, down: "gone" }), [{ label: "State", value: "gone" }]);
  });

  it("polls often while something changes, rarely when current, never when stopped", function () {
    assert.strictEqual(pollIntervalMs(running(parseStatus(payload()))), 5000);
    assert.strictEqual(pollIntervalMs(running(parseStatus(payload({ update: { pending: true } })))), 1000);
    assert.strictEqual(pollIntervalMs(running(parseStatus(payload()), { down: "timeout" })), 2000);
    assert.strictEqual(pollIntervalMs({ state: "stopped", elapsedMs: 0 }), 0);
    assert.strictEqual(pollIntervalMs({ state: "disabled", elapsedMs: 0 }), 0);
  });
});
