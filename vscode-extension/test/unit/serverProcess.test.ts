import * as assert from "assert";
import { spawn } from "child_process";
import {
  expandPath,
  explainEarlyExit,
  PathContext,
  resolveServerCommand,
  StderrTail,
  stopProcess,
} from "../../src/serverProcess";
import { DEFAULT_SETTINGS, ExtensionSettings, serverLaunch } from "../../src/settings";

const launch = (extra: Partial<ExtensionSettings> = {}) => serverLaunch({ ...DEFAULT_SETTINGS, ...extra });

function context(executables: string[], extra: Partial<PathContext> = {}): PathContext {
  return {
    home: "/home/me",
    workspaceFolder: "/work/proj",
    env: { PATH: "/usr/local/bin:/opt/venv/bin:/usr/bin" },
    platform: "linux",
    isExecutable: (f) => executables.includes(f),
    ...extra,
  };
}

describe("finding the server program", function () {
  it("finds repo2lora on PATH", function () {
    const r = resolveServerCommand(launch(), context(["/opt/venv/bin/repo2lora", "/usr/bin/repo2lora"]));
    assert.deepStrictEqual(r, { ok: true, command: "/opt/venv/bin/repo2lora" });
  });

  it("says how to fix a missing repo2lora on PATH", function () {
    const r = resolveServerCommand(launch(), context([]));
    assert.ok(!r.ok);
    assert.match(r.problem, /"repo2lora" is not on PATH/);
    assert.match(r.problem, /repo2lora\.serverPath/);
    assert.match(r.problem, /make setup/);
  });

  it("names the setting when a configured path is wrong", function () {
    const server = resolveServerCommand(launch({ serverPath: "/nope/repo2lora" }), context([]));
    assert.ok(!server.ok && /\/nope\/repo2lora.*repo2lora\.serverPath/.test(server.problem));
    const python = resolveServerCommand(launch({ pythonPath: "/nope/python" }), context([]));
    assert.ok(!python.ok && /\/nope\/python.*repo2lora\.pythonPath/.test(python.problem));
  });

  it("expands ~, ${workspaceFolder} and paths relative to the workspace", function () {
    const ctx = context(["/home/me/venv/bin/repo2lora", "/work/proj/.venv/bin/repo2lora"]);
    assert.deepStrictEqual(resolveServerCommand(launch({ serverPath: "~/venv/bin/repo2lora" }), ctx), {
      ok: true,
      command: "/home/me/venv/bin/repo2lora",
    });
    assert.deepStrictEqual(
      resolveServerCommand(launch({ serverPath: "${workspaceFolder}/.venv/bin/repo2lora" }), ctx),
      { ok: true, command: "/work/proj/.venv/bin/repo2lora" },
    );
    assert.strictEqual(expandPath(".venv/bin/python", ctx), "/work/proj/.venv/bin/python");
    assert.strictEqual(expandPath("python3", ctx), "python3");
  });

  it("finds a python interpreter by name on PATH", function () {
    const r = resolveServerCommand(launch({ pythonPath: "python3" }), context(["/usr/bin/python3"]));
    assert.deepStrictEqual(r, { ok: true, command: "/usr/bin/python3" });
  });
});

describe("explaining an early exit", function () {
  it("repeats the server's own one-line error", function () {
    const why = explainEarlyExit(launch({ model: "/m" }), 1, null, [
      "repo2lora: error: model directory not found: /m; pass an existing directory",
    ]);
    assert.strictEqual(why, "repo2lora: the server did not start: model directory not found: /m; pass an existing directory");
  });

  it("says to install repo2lora into an interpreter that lacks it", function () {
    const why = explainEarlyExit(launch({ pythonPath: "/usr/bin/python3" }), 1, null, [
      "/usr/bin/python3: No module named repo2lora",
    ]);
    assert.match(why, /\/usr\/bin\/python3 has no repo2lora module/);
    assert.match(why, /pip install/);
  });

  it("says to update a repo2lora without `serve`", function () {
    const why = explainEarlyExit(launch(), 2, null, ["repo2lora: error: argument command: invalid choice: 'serve'"]);
    assert.match(why, /no `serve` command/);
  });

  it("gives the exit code and last stderr line otherwise", function () {
    const why = explainEarlyExit(launch(), 139, null, ["Traceback", "Segmentation fault"]);
    assert.match(why, /exited with code 139 while starting \(Segmentation fault\)/);
    assert.match(explainEarlyExit(launch(), null, "SIGKILL", []), /killed by SIGKILL/);
  });
});

describe("stderr tail", function () {
  it("keeps the last lines within its bound", function () {
    const tail = new StderrTail(16);
    tail.push("first line\nsecond line\n");
    tail.push(Buffer.from("third\r\n"));
    assert.deepStrictEqual(tail.lines(), ["ond line", "third"]);
  });
});

describe("stopping a process", function () {
  it("terminates a process that does not exit by itself", async function () {
    const proc = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"]);
    await stopProcess(proc, 50);
    assert.strictEqual(proc.signalCode, "SIGTERM");
  });

  it("kills a process that ignores SIGTERM", async function () {
    const proc = spawn(process.execPath, ["-e", "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); console.log('ready')"]);
    await new Promise((r) => proc.stdout.once("data", r));
    await stopProcess(proc, 100);
    assert.strictEqual(proc.signalCode, "SIGKILL");
  });

  it("returns at once for a process that has exited", async function () {
    const proc = spawn(process.execPath, ["-e", ""]);
    await new Promise((r) => proc.once("exit", r));
    await stopProcess(proc, 10_000);
  });
});
