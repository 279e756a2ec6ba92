/** The real language server (`repo2lora serve --stdio --model tiny-random`), started with the
 * extension's own launch settings and spoken to over LSP, on a real git repository in a temp
 * folder: inline completions come back, and a new commit reaches the status and the
 * adapterChanged notification. Every wait has a deadline. */

import * as assert from "assert";
import { parseStatus } from "../../src/adapterStatus";
import { REGENERATE_COMMAND } from "../../src/protocol";
import { waitFor } from "../support/deadline";
import { GitRepo, SAMPLE_V1, SAMPLE_V2, USE_PY } from "../support/gitRepo";
import { endOf, RealServer, settledOn, testSettings } from "../support/realServer";

describe("the real repo2lora server over LSP", function () {
  let repo: GitRepo;
  let server: RealServer;
  let first: string;

  before(async function () {
    repo = GitRepo.temp("repo2lora-protocol-");
    first = repo.commit(SAMPLE_V1, "v1");
    server = RealServer.start(testSettings(), repo.root);
    await server.initialize(repo.root);
  });

  after(async function () {
    await server?.stop();
    repo?.remove();
  });

  it("advertises inline completion and the repo2lora commands", function () {
    const caps = server.initializeResult!.capabilities;
    assert.ok(caps.inlineCompletionProvider, "no inlineCompletionProvider");
    assert.ok(caps.completionProvider, "no completionProvider");
    const commands = caps.executeCommandProvider?.commands ?? [];
    assert.ok(commands.includes(REGENERATE_COMMAND), `commands: ${commands}`);
    assert.ok(commands.includes("repo2lora.status"), `commands: ${commands}`);
  });

  it("accepts every initializationOption the extension sends", async function () {
    await server.status(); // a round trip: log messages sent before its answer have arrived
    const refused = server.logs.filter((m) => /option/.test(m.message));
    assert.deepStrictEqual(refused, [], "the server ignored options the extension sent");
  });

  it("makes HEAD's adapter, with work-done progress", async function () {
    const st = await settledOn(server, first);
    assert.strictEqual(st.repository, repo.root);
    assert.strictEqual(st.head, first);
    assert.ok(st.adapter.version >= 1);
    assert.ok(server.progress.some((p) => p.kind === "begin"), "no $/progress begin");
    await waitFor("$/progress end", () => (server.progress.some((p) => p.kind === "end") ? true : undefined), 10_000);
  });

  it("answers an inline completion request with the same text each time", async function () {
    const uri = repo.uri("pkg/use.py");
    await server.open(uri, USE_PY);
    const { line, character } = endOf(USE_PY);
    const list = await server.inlineCompletion(uri, line, character);
    assert.strictEqual(list.items.length, 1, JSON.stringify(list));
    const item = list.items[0];
    assert.strictEqual(typeof item.insertText, "string");
    assert.ok((item.insertText as string).length > 0, "empty completion");
    assert.ok(!(item.insertText as string).includes("\n"), "single-line completions by default");
    assert.deepStrictEqual(item.range, { start: { line, character }, end: { line, character } });
    const again = await server.inlineCompletion(uri, line, character);
    assert.strictEqual(again.items[0]?.insertText, item.insertText);
    const st = parseStatus(await server.status());
    assert.ok(st.completions.requests >= 2);
  });

  it("follows a new commit: the status and adapterChanged show its adapter", async function () {
    const before = parseStatus(await server.status());
    const notified = server.adapterChanges.length;
    const second = repo.commit(SAMPLE_V2, "v2");
    const st = await settledOn(server, second);
    assert.strictEqual(st.head, second);
    assert.ok(st.adapter.version > before.adapter.version, "the adapter version did not move on");
    const changed = await waitFor(
      "adapterChanged for the new commit",
      () =>
        server.adapterChanges
          .slice(notified)
          .map(parseStatus)
          .find((s) => s.adapter.commit === second),
      10_000,
    );
    assert.strictEqual(changed.adapter.upToDate, true);
  });

  it("regenerates on workspace/executeCommand and returns the new status", async function () {
    const before = parseStatus(await server.status());
    const payload = await server.connection.sendRequest("workspace/executeCommand", {
      command: REGENERATE_COMMAND,
      arguments: [],
    });
    const after = parseStatus(payload);
    assert.strictEqual(after.adapter.commit, before.adapter.commit);
    assert.ok(after.adapter.version > before.adapter.version, JSON.stringify(payload));
    assert.strictEqual(after.adapter.source, "regenerate");
  });

  it("takes new runtime options through workspace/didChangeConfiguration", async function () {
    await server.connection.sendNotification("workspace/didChangeConfiguration", {
      settings: { repo2lora: { maxNewTokens: 4, debounceMs: 0 } },
    });
    const uri = repo.uri("pkg/other.py");
    const text = USE_PY + "v";
    await server.open(uri, text);
    const completion = await server.completionAtEnd(uri, text);
    assert.ok(completion.length > 0 && completion.length <= 4 * 4, `4 tokens at most: ${JSON.stringify(completion)}`);
    assert.deepStrictEqual(server.logs.filter((m) => /option/.test(m.message)), []);
  });
});

describe("a server that cannot start", function () {
  it("is explained in one sentence from its own error", async function () {
    const repo = GitRepo.temp("repo2lora-badmodel-");
    const server = RealServer.start(testSettings({ model: "/nonexistent/model-dir" }), repo.root);
    try {
      await waitFor("the server to exit", () => (server.exited() ? true : undefined), 60_000);
      assert.notStrictEqual(server.process.exitCode, 0);
      const why = server.exitExplanation();
      assert.match(why, /^repo2lora: the server did not start: /);
      assert.match(why, /nonexistent/);
    } finally {
      await server.stop();
      repo.remove();
    }
  });
});
