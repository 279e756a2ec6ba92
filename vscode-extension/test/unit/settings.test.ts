import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import {
  DEFAULT_SETTINGS,
  documentSelector,
  ExtensionSettings,
  needsRestart,
  readSettings,
  runtimeOptions,
  serverLaunch,
} from "../../src/settings";

const settings = (extra: Partial<ExtensionSettings> = {}): ExtensionSettings => ({ ...DEFAULT_SETTINGS, ...extra });
const fromValues = (values: Record<string, unknown>) => readSettings((key) => values[key]);

describe("settings -> server launch", function () {
  it("starts `repo2lora serve --stdio` from PATH by default, with the runtime options", function () {
    assert.deepStrictEqual(serverLaunch(settings()), {
      command: "repo2lora",
      args: ["serve", "--stdio"],
      initializationOptions: { debounceMs: 25, maxNewTokens: 48 },
      source: "PATH",
    });
  });

  it("passes the model and hypernetwork as flags", function () {
    const launch = serverLaunch(settings({ model: "tiny-random", hypernetwork: "/ckpt/evo" }));
    assert.deepStrictEqual(launch.args, ["serve", "--stdio", "--model", "tiny-random", "--hypernet", "/ckpt/evo"]);
  });

  it("runs `python -m repo2lora` when only a Python interpreter is set", function () {
    const launch = serverLaunch(settings({ pythonPath: "/venv/bin/python", model: "m" }));
    assert.strictEqual(launch.command, "/venv/bin/python");
    assert.deepStrictEqual(launch.args, ["-m", "repo2lora", "serve", "--stdio", "--model", "m"]);
    assert.strictEqual(launch.source, "pythonPath");
  });

  it("prefers the server path over the Python interpreter", function () {
    const launch = serverLaunch(settings({ serverPath: "/venv/bin/repo2lora", pythonPath: "/usr/bin/python3" }));
    assert.strictEqual(launch.command, "/venv/bin/repo2lora");
    assert.strictEqual(launch.source, "serverPath");
    assert.deepStrictEqual(launch.args, ["serve", "--stdio"]);
  });

  it("sends debounce and max new tokens under the server's option names", function () {
    assert.deepStrictEqual(runtimeOptions(settings({ debounceMs: 100, maxNewTokens: 16 })), {
      debounceMs: 100,
      maxNewTokens: 16,
    });
  });
});

describe("reading settings", function () {
  it("gives the defaults when nothing is set", function () {
    assert.deepStrictEqual(fromValues({}), DEFAULT_SETTINGS);
  });

  it("falls back to the default for a value of the wrong type", function () {
    const s = fromValues({ enable: "yes", model: 3, debounceMs: "10", languages: "python" });
    assert.strictEqual(s.enable, true);
    assert.strictEqual(s.model, "");
    assert.strictEqual(s.debounceMs, 25);
    assert.deepStrictEqual(s.languages, ["python"]);
  });

  it("clamps numbers into the server's ranges and rounds them", function () {
    const s = fromValues({ debounceMs: -5, maxNewTokens: 1e9 });
    assert.strictEqual(s.debounceMs, 0);
    assert.strictEqual(s.maxNewTokens, 4096);
    assert.strictEqual(fromValues({ maxNewTokens: 0 }).maxNewTokens, 1);
    assert.strictEqual(fromValues({ debounceMs: 12.6 }).debounceMs, 13);
  });

  it("trims paths and drops empty language ids", function () {
    const s = fromValues({ serverPath: "  /opt/bin/repo2lora ", languages: ["python", "", 7, " go "] });
    assert.strictEqual(s.serverPath, "/opt/bin/repo2lora");
    assert.deepStrictEqual(s.languages, ["python", "go"]);
  });
});

describe("what needs a restart", function () {
  it("restarts for the program, its flags, the languages and enable", function () {
    const base = settings();
    assert.ok(needsRestart(base, settings({ model: "tiny-random" })));
    assert.ok(needsRestart(base, settings({ hypernetwork: "/h" })));
    assert.ok(needsRestart(base, settings({ serverPath: "/x/repo2lora" })));
    assert.ok(needsRestart(base, settings({ pythonPath: "/x/python" })));
    assert.ok(needsRestart(base, settings({ languages: ["python", "rust"] })));
    assert.ok(needsRestart(base, settings({ enable: false })));
  });

  it("does not restart for what the running server takes", function () {
    const base = settings({ languages: ["python", "go"] });
    assert.ok(!needsRestart(base, settings({ languages: ["python", "go"], debounceMs: 300, maxNewTokens: 8 })));
    assert.ok(!needsRestart(base, settings({ languages: ["go", "python"] })));
    assert.ok(!needsRestart(base, settings({ languages: ["python", "go"], suggestionList: true })));
  });

  it("does not restart for a python path the server path overrides", function () {
    const base = settings({ serverPath: "/x/repo2lora" });
    assert.ok(!needsRestart(base, settings({ serverPath: "/x/repo2lora", pythonPath: "/y/python" })));
  });
});

describe("document selector", function () {
  it("selects files of the configured languages", function () {
    assert.deepStrictEqual(documentSelector(["python"]), [{ scheme: "file", language: "python" }]);
  });

  it("selects every file for * or an empty list", function () {
    assert.deepStrictEqual(documentSelector(["python", "*"]), [{ scheme: "file" }]);
    assert.deepStrictEqual(documentSelector([]), [{ scheme: "file" }]);
  });
});

describe("settings as the Settings editor shows them", function () {
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "..", "package.json"), "utf8"));
  const properties = manifest.contributes.configuration.properties;

  it("names the shipped default hypernetwork, which is trained", function () {
    const text: string = properties["repo2lora.hypernetwork"].markdownDescription;
    assert.match(text, /trained hypernetwork shipped with the embedded default model/);
    assert.match(text, /update_follows/);
    assert.doesNotMatch(text, /untrained/i);
  });
});
