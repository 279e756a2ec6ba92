/** The extension in a real VS Code (code-server in headless Chromium, driven by playwright-core):
 * the packaged .vsix is installed, a file of a temp git repository is opened, an inline
 * suggestion is triggered, and the ghost text must be exactly the completion the real server
 * gives at that cursor; the status bar must show the adapter's commit. Then, as a user would:
 * Tab inserts it, a commit moves the status bar on, clicking it shows the status, Regenerate
 * runs from the palette, a wrong server path is explained and shows the server down, fixing it
 * brings the server back, and no server is left running when VS Code stops. Saves a screenshot.
 *
 * Needs code-server and Chromium: scripts/install-code-server.sh installs them (once, cached).
 * Run with `npm run test:vscode` after `npm run package`, or `REPO2LORA_VSCODE_E2E=1 make test`.
 * REPO2LORA_VSCODE_E2E_KEEP=1 keeps the scratch folder (code-server's logs) for a look. */

import * as assert from "assert";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Browser, chromium, Page } from "playwright-core";
import { sleep, waitFor } from "../support/deadline";
import { GitRepo, SAMPLE_V1 } from "../support/gitRepo";
import { EXTENSION_ROOT, RealServer, serverProgram, settledOn, testSettings } from "../support/realServer";
import { CodeServer, describeProcesses, serversIn } from "./codeServer";

const E2E_DIR = path.resolve(EXTENSION_ROOT, process.env.REPO2LORA_VSCODE_E2E_DIR ?? ".vscode-e2e");
const VSIX = path.join(EXTENSION_ROOT, "repo2lora.vsix");
// the screenshot differs a little from run to run (cursor blink, timing): it goes to the scratch
// cache unless asked for elsewhere (REPO2LORA_VSCODE_E2E_SCREENSHOT=docs/screenshot.png refreshes
// the README's)
const SCREENSHOT = path.resolve(EXTENSION_ROOT, process.env.REPO2LORA_VSCODE_E2E_SCREENSHOT ?? path.join(E2E_DIR, "screenshot.png"));
const CHROMIUM = process.env.REPO2LORA_CHROMIUM ?? "/usr/bin/chromium";
// not the default (48), so a ghost text of the expected length shows the setting reached the server
const MAX_NEW_TOKENS = 24;

/** The file the test edits: every line end is a cursor the test may use. */
const USE_FILE = "pkg/use.py";
const USE_TEXT =
  "from pkg.geometry import Vector, area_of_circle\n\n\n" +
  "def total_area(radii):\n    return sum(area_of_circle(r) for r in radii)\n\n\n" +
  "def longest(vectors):\n    return max(vectors, key=lambda v: v.norm())\n\n\n" +
  "def scaled(vector, factor):\n    return Vector(vector.x * factor, vector.y * factor)\n\n\n" +
  "UNIT_VECTOR = Vector(1, 0)\n" +
  "ORIGIN = Vector(0, 0)\n" +
  "def unit(v):\n    return Vector(v.x / v.norm(), v.y / v.norm())\n";

/** Text that shows as itself in the editor: printable ASCII, not starting with a space. */
const showsAsItself = (t: string) => /^[\x21-\x7e][\x20-\x7e]{2,}$/.test(t);
const normalise = (t: string) => t.replace(/\u00a0/g, " ");

const timings: Record<string, number> = {};
async function timed<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    timings[name] = (Date.now() - t0) / 1000;
  }
}

describe("the extension in a real VS Code (code-server + Chromium)", function () {
  let scratch: string;
  let repo: GitRepo;
  let head: string;
  let cursor: { line: number; character: number; expected: string };
  let codeServer: CodeServer | undefined;
  let browser: Browser | undefined;
  let page: Page;

  before(async function () {
    await timed("install code-server + chromium (cached after the first run)", () =>
      execFileSync(path.join(EXTENSION_ROOT, "scripts", "install-code-server.sh"), [E2E_DIR], { stdio: "inherit" }),
    );
    if (!fs.existsSync(VSIX)) {
      await timed("vsce package", () => execFileSync("npm", ["run", "package"], { cwd: EXTENSION_ROOT, stdio: "inherit" }));
    }
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), "repo2lora-vscode-e2e-"));
    repo = new GitRepo(path.join(scratch, "project"));
    head = repo.commit({ ...SAMPLE_V1, [USE_FILE]: USE_TEXT }, "v1");
    cursor = await timed("expected completion from the real server", () => pickCursor(repo, head));
  });

  // a failing step leaves a screenshot of the workbench and code-server's log tail behind
  afterEach(async function () {
    if (this.currentTest?.state === "failed" && page && browser) {
      const dir = path.join(E2E_DIR, "failures");
      fs.mkdirSync(dir, { recursive: true });
      const name = (this.currentTest.title || "test").replace(/[^a-z0-9]+/gi, "-");
      await page.screenshot({ path: path.join(dir, `${name}.png`) }).catch(() => undefined);
      fs.writeFileSync(path.join(dir, `${name}.log`), codeServer?.tail(200) ?? "");
      console.log(`    failure screenshot: ${path.join(dir, name + ".png")}`);
    }
  });

  after(async function () {
    await browser?.close().catch(() => undefined);
    if (codeServer) {
      await codeServer.stop();
      codeServer.killGroup();
    }
    for (const pid of repo ? serversIn(repo.root) : []) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    if (scratch && !process.env.REPO2LORA_VSCODE_E2E_KEEP) {
      fs.rmSync(scratch, { recursive: true, force: true });
    } else if (scratch) {
      console.log(`    kept ${scratch} (REPO2LORA_VSCODE_E2E_KEEP)`);
    }
    console.log(`    timings (s): ${JSON.stringify(timings)}`);
  });

  it("installs the .vsix and opens the workbench", async function () {
    const bin = path.join(E2E_DIR, "cs", "node_modules", ".bin", "code-server");
    codeServer = new CodeServer(bin, path.join(scratch, "code-server"));
    await timed("install the .vsix", () => codeServer!.installExtension(VSIX));
    codeServer.writeSettings({
      "repo2lora.serverPath": serverProgram(),
      "repo2lora.model": "tiny-random",
      "repo2lora.debounceMs": 0,
      "repo2lora.maxNewTokens": MAX_NEW_TOKENS,
      ...(process.env.REPO2LORA_VSCODE_E2E_KEEP ? { "repo2lora.trace.server": "verbose" } : {}),
    });
    await timed("start code-server", () =>
      codeServer!.start(repo.root, { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" }),
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 540 } });
    await timed("workbench up", async () => {
      await page.goto(codeServer!.url(repo.root));
      await page.locator(".monaco-workbench").waitFor({ timeout: 60_000 });
    });
  });

  it("shows the adapter's commit in the status bar", async function () {
    const sha = head.slice(0, 7);
    await timed("status bar shows the adapter commit", () => statusItemWith(page, sha, 120_000, codeServer!));
    const item = page.locator(".statusbar-item", { hasText: sha }).first();
    assert.match(normalise(await item.innerText()), new RegExp(`${sha} · (now|\\d+s)`));
    assert.ok(!(await item.getAttribute("class"))?.includes("warning-kind"), "a current adapter is not a warning");
  });

  it("shows the server's completion as ghost text", async function () {
    await clearNotifications(page);
    await openFileAt(page, USE_FILE, cursor.line + 1);
    const ghost = await timed("ghost text shown", () =>
      waitFor(
        "ghost text",
        async () => {
          // editor.action.inlineSuggest.trigger: its Alt+\ key binding does not reach it from playwright
          await runCommand(page, "Trigger Inline Suggestion");
          await sleep(500);
          const parts = await page.locator(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text").allInnerTexts();
          const text = normalise(parts.join(""));
          return text.trim() ? text : undefined;
        },
        60_000,
        1000,
      ),
    );
    console.log(`    ghost text at line ${cursor.line + 1}: ${JSON.stringify(ghost)}`);
    assert.strictEqual(ghost, cursor.expected, "the ghost text is not the server's completion");
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    console.log(`    screenshot: ${SCREENSHOT}`);
  });

  it("inserts exactly that completion on Tab", async function () {
    await page.keyboard.press("Tab");
    await page.keyboard.press("Control+s");
    const lines = USE_TEXT.split("\n");
    const want = lines[cursor.line] + cursor.expected;
    await waitFor(
      "the accepted completion on disk",
      () => (fs.readFileSync(path.join(repo.root, USE_FILE), "utf8").split("\n")[cursor.line] === want ? true : undefined),
      10_000,
    );
  });

  it("follows a new commit in the status bar", async function () {
    head = repo.commit({}, "take the completion"); // the saved file
    await timed("status bar follows a commit", () => statusItemWith(page, head.slice(0, 7), 60_000, codeServer!));
  });

  it("shows the status when the status bar item is clicked", async function () {
    const sha = head.slice(0, 7);
    await page.locator(".statusbar-item", { hasText: sha }).first().click();
    const rows = page.locator(".quick-input-list .monaco-list-row");
    await rows.filter({ hasText: "Regenerate adapter" }).first().waitFor({ timeout: 10_000 });
    const texts = (await rows.allInnerTexts()).map(normalise);
    assert.ok(texts.some((t) => t.includes(`${sha} (version `) && t.includes("Adapter")), JSON.stringify(texts));
    assert.ok(texts.some((t) => t.includes("the adapter is HEAD's")), JSON.stringify(texts));
    await page.keyboard.press("Escape");
  });

  it("regenerates the adapter from the command palette", async function () {
    await runCommand(page, "repo2lora: Regenerate adapter");
    const toast = page.locator(".notification-toast", { hasText: `adapter regenerated for commit ${head.slice(0, 7)}` });
    await timed("regenerate", () => toast.first().waitFor({ timeout: 60_000 }));
    await clearNotifications(page);
  });

  it("explains a server program that is missing and shows the server down", async function () {
    await setSetting(page, "repo2lora.serverPath", "/nonexistent/bin/repo2lora");
    const toast = page.locator(".notification-toast", { hasText: "is not an executable file" });
    await toast.first().waitFor({ timeout: 30_000 });
    assert.match(normalise(await toast.first().innerText()), /repo2lora\.serverPath/);
    const down = page.locator(".statusbar-item:has(.codicon-debug-disconnect)");
    await down.first().waitFor({ timeout: 10_000 });
    assert.ok((await down.first().getAttribute("class"))?.includes("warning-kind"), "a server that is down is a warning");
    await waitFor("the old server to stop", () => (serversIn(repo.root).length === 0 ? true : undefined), 15_000, 250, () =>
      `still running: ${describeProcesses(serversIn(repo.root))}`,
    );
    await clearNotifications(page);
  });

  it("starts the server again when the setting is fixed", async function () {
    await setSetting(page, "repo2lora.serverPath", serverProgram());
    await timed("restart after a settings fix", () => statusItemWith(page, head.slice(0, 7), 60_000, codeServer!));
  });

  it("restarts a server that crashed", async function () {
    const [before] = serversIn(repo.root);
    assert.ok(before, "no language server was running in the repository");
    process.kill(before, "SIGKILL");
    const after = await timed("restart after a crash", () =>
      waitFor("a new language server", () => serversIn(repo.root).find((pid) => pid !== before), 30_000, 250),
    );
    assert.notStrictEqual(after, before);
    await statusItemWith(page, head.slice(0, 7), 60_000, codeServer!);
  });

  it("leaves no language server running once VS Code stops", async function () {
    assert.ok(serversIn(repo.root).length > 0, "no language server was running in the repository");
    await browser?.close();
    browser = undefined;
    await codeServer!.stop();
    await waitFor("the language server to exit", () => (serversIn(repo.root).length === 0 ? true : undefined), 15_000, 250, () =>
      `still running: ${describeProcesses(serversIn(repo.root))}`,
    );
  });
});

function statusItemWith(page: Page, text: string, timeoutMs: number, codeServer: CodeServer): Promise<true> {
  return waitFor(
    `a status bar item with ${text}`,
    () => page.locator(".statusbar-item", { hasText: text }).count().then((n) => (n > 0 ? true : undefined)),
    timeoutMs,
    250,
    () => codeServer.tail(),
  );
}

/** A line end where the real server's completion shows as itself in the editor, and that
 * completion: asked of a server of its own (stopped before VS Code starts its server, so the
 * two never share the repository's state at once) with the settings VS Code will use. */
async function pickCursor(repo: GitRepo, head: string): Promise<{ line: number; character: number; expected: string }> {
  const server = RealServer.start(testSettings({ maxNewTokens: MAX_NEW_TOKENS }), repo.root);
  try {
    await server.initialize(repo.root);
    await settledOn(server, head);
    const uri = repo.uri(USE_FILE);
    await server.open(uri, USE_TEXT);
    const lines = USE_TEXT.split("\n");
    const tried: string[] = [];
    for (let line = lines.length - 1; line >= 0; line--) {
      if (!lines[line].trim()) {
        continue;
      }
      const list = await server.inlineCompletion(uri, line, lines[line].length);
      const text = list.items[0]?.insertText;
      if (typeof text === "string" && showsAsItself(text)) {
        return { line, character: lines[line].length, expected: text };
      }
      tried.push(`${line + 1}: ${JSON.stringify(text)}`);
    }
    throw new Error(`no line end gives a printable completion: ${tried.join("; ")}`);
  } finally {
    await server.stop();
  }
}

/** Sets a program path the way a user does, in the Settings editor (code-server does not notice
 * a settings.json written behind its back), and closes the editor. Program paths are
 * machine-overridable settings: in a remote window (code-server is one) they are the Remote
 * tab's. */
async function setSetting(page: Page, id: string, value: string): Promise<void> {
  await runCommand(page, "Preferences: Open User Settings");
  const editor = page.locator(".settings-editor");
  await editor.waitFor({ timeout: 20_000 });
  await editor.locator(".settings-tabs-widget .action-label", { hasText: "Remote" }).first().click();
  await editor.locator(".settings-header .suggest-input-container").first().click();
  await page.keyboard.type(id);
  const input = editor.locator(`.setting-item-contents:has-text("Server Path") input`).first();
  await input.waitFor({ timeout: 20_000 });
  await input.fill(value);
  await input.press("Enter");
  await sleep(1500); // the editor writes a text setting after a short pause
  await page.keyboard.press("Control+w");
  await editor.waitFor({ state: "hidden", timeout: 10_000 });
}

async function clearNotifications(page: Page): Promise<void> {
  await runCommand(page, "Notifications: Clear All Notifications");
}

async function runCommand(page: Page, title: string): Promise<void> {
  await page.keyboard.press("F1");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: 10_000 });
  await input.fill(`>${title}`);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor({ timeout: 10_000 });
  await page.keyboard.press("Enter");
  await input.waitFor({ state: "hidden", timeout: 10_000 });
}

/** Quick Open the file, go to `line` (1-based) and to its end. */
async function openFileAt(page: Page, rel: string, line: number): Promise<void> {
  await page.keyboard.press("Control+p");
  const input = page.locator(".quick-input-widget input");
  await input.waitFor({ state: "visible", timeout: 10_000 });
  await input.fill(rel);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: path.basename(rel) }).first().waitFor({ timeout: 20_000 });
  await page.keyboard.press("Enter");
  await page.locator(".monaco-editor .view-lines").first().waitFor({ timeout: 20_000 });
  await page.keyboard.press("Control+g");
  await input.waitFor({ state: "visible", timeout: 10_000 });
  await input.fill(`:${line}`);
  await page.keyboard.press("Enter");
  await input.waitFor({ state: "hidden", timeout: 10_000 });
  await page.keyboard.press("End");
}
