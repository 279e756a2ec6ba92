/** A real VS Code (code-server 4.100.3, VS Code 1.100.3, in the browser) in a scratch folder:
 * its own config, user data and extensions folders (nothing is written to the home folder),
 * served on 127.0.0.1 and stopped by its process id. */

import { ChildProcess, execFileSync, spawn } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import { stopProcess } from "../../src/serverProcess";
import { waitFor } from "../support/deadline";

export class CodeServer {
  private proc: ChildProcess | undefined;
  readonly log: string;
  port = 0;

  constructor(
    readonly bin: string, // .../node_modules/.bin/code-server
    readonly dir: string, // scratch folder for config, user data, extensions, log
  ) {
    this.log = path.join(dir, "code-server.log");
  }

  private get common(): string[] {
    return [
      "--config", path.join(this.dir, "config.yaml"),
      "--user-data-dir", path.join(this.dir, "user-data"),
      "--extensions-dir", path.join(this.dir, "extensions"),
    ];
  }

  /** User settings for a calm, deterministic workbench, plus `settings`. */
  writeSettings(settings: Record<string, unknown>): void {
    const user = path.join(this.dir, "user-data", "User");
    fs.mkdirSync(user, { recursive: true });
    const base = {
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.enableExperiments": false,
      "workbench.colorTheme": "Default Dark Modern",
      "workbench.layoutControl.enabled": false,
      "window.commandCenter": false,
      "security.workspace.trust.enabled": false,
      "telemetry.telemetryLevel": "off",
      "update.mode": "none",
      "extensions.autoCheckUpdates": false,
      "extensions.autoUpdate": false,
      "extensions.ignoreRecommendations": true,
      "editor.minimap.enabled": false,
      "editor.quickSuggestions": { other: false, comments: false, strings: false },
      "editor.inlineSuggest.enabled": true,
      "files.autoSave": "off",
      "git.enabled": false,
    };
    fs.writeFileSync(path.join(user, "settings.json"), JSON.stringify({ ...base, ...settings }, null, 2));
  }

  installExtension(vsix: string): void {
    fs.mkdirSync(this.dir, { recursive: true });
    fs.writeFileSync(path.join(this.dir, "config.yaml"), "auth: none\ncert: false\n");
    execFileSync(this.bin, [...this.common, "--install-extension", vsix], { stdio: "pipe", timeout: 120_000 });
  }

  async start(folder: string, env: NodeJS.ProcessEnv): Promise<void> {
    this.port = await freePort();
    const out = fs.openSync(this.log, "a");
    this.proc = spawn(
      this.bin,
      [
        ...this.common,
        "--bind-addr", `127.0.0.1:${this.port}`,
        "--auth", "none",
        "--disable-telemetry",
        "--disable-update-check",
        "--disable-workspace-trust",
        "--disable-getting-started-override",
        folder,
      ],
      { stdio: ["ignore", out, out], env, detached: true }, // its own process group: see stop()
    );
    fs.closeSync(out);
    await waitFor("code-server to answer /healthz", () => healthy(this.port), 60_000, 250, () => this.tail());
  }

  url(folder: string): string {
    return `http://127.0.0.1:${this.port}/?folder=${encodeURIComponent(folder)}`;
  }

  tail(lines = 20): string {
    try {
      return fs.readFileSync(this.log, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** SIGTERM to code-server (SIGKILL after a grace period), by its process id. */
  async stop(): Promise<void> {
    if (this.proc) {
      await stopProcess(this.proc, 5000);
    }
  }

  /** SIGKILL to whatever is left of the process group code-server led (it was started as its
   * own group: extension host, watchers, and the language servers they started). */
  killGroup(): void {
    const pid = this.proc?.pid;
    this.proc = undefined;
    if (pid === undefined) {
      return;
    }
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // the group is gone already
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function healthy(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/healthz", timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? true : undefined);
    });
    req.on("error", () => resolve(undefined));
    req.on("timeout", () => {
      req.destroy();
      resolve(undefined);
    });
  });
}

/** The repo2lora language servers running in `dir` (their working folder; VS Code starts other
 * servers there too, such as the JSON one, which are not counted). */
export function serversIn(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (fs.readlinkSync(`/proc/${entry}/cwd`) === dir && cmd.includes("serve") && cmd.includes("--stdio")) {
        pids.push(Number(entry));
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

/** `pid: command line` of each process, for messages. */
export function describeProcesses(pids: number[]): string {
  return pids
    .map((pid) => {
      try {
        return `${pid}: ${fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim()}`;
      } catch {
        return `${pid}: (gone)`;
      }
    })
    .join("; ");
}
