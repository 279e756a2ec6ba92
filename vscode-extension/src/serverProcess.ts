/** The language server as an operating-system process: finding its program, starting it,
 * keeping the end of its stderr, explaining an early exit in one sentence, and stopping it.
 * No `vscode` import, so it is unit-tested and used by the protocol test as is. */

import { ChildProcessWithoutNullStreams, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import type { ServerLaunch } from "./settings";

export type Resolution = { ok: true; command: string } | { ok: false; problem: string };

export interface PathContext {
  home: string;
  workspaceFolder?: string;
  env: NodeJS.ProcessEnv;
  platform: NodeJS.Platform;
  isExecutable: (file: string) => boolean;
}

export function isExecutableFile(file: string): boolean {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) {
      return false;
    }
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** `~` and `${workspaceFolder}` expanded; a relative path is taken from the workspace folder. */
export function expandPath(p: string, ctx: Pick<PathContext, "home" | "workspaceFolder">): string {
  let out = p.replace(/\$\{workspaceFolder\}/g, ctx.workspaceFolder ?? "${workspaceFolder}");
  if (out === "~" || out.startsWith("~/")) {
    out = path.join(ctx.home, out.slice(1));
  }
  if (!path.isAbsolute(out) && /[\\/]/.test(out) && ctx.workspaceFolder) {
    out = path.resolve(ctx.workspaceFolder, out);
  }
  return out;
}

/** The program `launch` names, as a path that exists, or what the user should do instead. */
export function resolveServerCommand(launch: ServerLaunch, ctx: PathContext): Resolution {
  const command = expandPath(launch.command, ctx);
  const hasDir = /[\\/]/.test(command);
  const found = hasDir ? (ctx.isExecutable(command) ? command : undefined) : searchPath(command, ctx);
  if (found) {
    return { ok: true, command: found };
  }
  return { ok: false, problem: missingProgram(launch, command) };
}

/** `resolveServerCommand` on this machine: its home folder, environment and file system. */
export function resolveOnHost(launch: ServerLaunch, workspaceFolder?: string): Resolution {
  return resolveServerCommand(launch, {
    home: os.homedir(),
    workspaceFolder,
    env: process.env,
    platform: process.platform,
    isExecutable: isExecutableFile,
  });
}

function searchPath(name: string, ctx: PathContext): string | undefined {
  const win = ctx.platform === "win32";
  const p = win ? path.win32 : path.posix;
  const dirs = (ctx.env.PATH ?? ctx.env.Path ?? "").split(win ? ";" : ":").filter(Boolean);
  const exts = win ? ["", ...(ctx.env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";")] : [""];
  for (const dir of dirs) {
    for (const ext of exts) {
      const candidate = p.join(dir, name + ext);
      if (ctx.isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}

function missingProgram(launch: ServerLaunch, command: string): string {
  switch (launch.source) {
    case "serverPath":
      return (
        `repo2lora: the server program "${command}" (setting repo2lora.serverPath) is not an ` +
        "executable file; set repo2lora.serverPath to the repo2lora program of the environment " +
        "repo2lora is installed in (e.g. <checkout>/.venv/bin/repo2lora), or clear it to use " +
        "repo2lora from PATH."
      );
    case "pythonPath":
      return (
        `repo2lora: the Python interpreter "${command}" (setting repo2lora.pythonPath) is not an ` +
        "executable file; set it to the python of the environment repo2lora is installed in, " +
        "or set repo2lora.serverPath instead."
      );
    default:
      return (
        `repo2lora: the language server program "${command}" is not on PATH; install repo2lora ` +
        "(in its checkout: make setup) and set repo2lora.serverPath to its .venv/bin/repo2lora, " +
        "or repo2lora.pythonPath to that environment's python."
      );
  }
}

/** The last lines a process wrote to stderr (a bounded buffer). */
export class StderrTail {
  private text = "";

  constructor(private readonly maxChars = 8000) {}

  push(chunk: string | Buffer): void {
    this.text = (this.text + chunk.toString()).slice(-this.maxChars);
  }

  lines(): string[] {
    return this.text.split(/\r?\n/).map((l) => l.trimEnd()).filter(Boolean);
  }
}

/** One sentence saying why the server stopped before it was serving, and what to do. */
export function explainEarlyExit(
  launch: ServerLaunch,
  code: number | null,
  signal: string | null,
  stderr: string[],
): string {
  const all = stderr.join("\n");
  if (/No module named '?repo2lora/.test(all)) {
    return (
      `repo2lora: ${launch.command} has no repo2lora module; install repo2lora into that ` +
      "environment (pip install -e <checkout>) or set repo2lora.serverPath to a repo2lora program."
    );
  }
  if (/invalid choice: 'serve'/.test(all)) {
    return "repo2lora: this repo2lora has no `serve` command; update it (git pull, then make setup).";
  }
  const userError = [...stderr].reverse().find((l) => l.startsWith("repo2lora: error:"));
  if (userError) {
    const what = userError.slice("repo2lora: error:".length).trim();
    return `repo2lora: the server did not start: ${what}`;
  }
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  const last = stderr.length ? ` (${stderr[stderr.length - 1]})` : "";
  return `repo2lora: the server ${how} while starting${last}; its log is in the "repo2lora" output channel.`;
}

export function startServerProcess(
  command: string,
  launch: ServerLaunch,
  cwd: string,
  env: NodeJS.ProcessEnv = process.env,
): ChildProcessWithoutNullStreams {
  return spawn(command, launch.args, {
    cwd,
    env: { ...env, PYTHONUNBUFFERED: "1" },
    stdio: "pipe",
    windowsHide: true,
  });
}

/** Whether `proc` has exited (with a code or by a signal). */
export function hasExited(proc: { exitCode: number | null; signalCode: string | null }): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Waits for `proc` to exit; SIGTERM after `graceMs`, SIGKILL after as long again. */
export function stopProcess(
  proc: { exitCode: number | null; signalCode: string | null; kill(sig?: NodeJS.Signals): boolean; once(ev: "exit", fn: () => void): unknown },
  graceMs = 3000,
): Promise<void> {
  if (hasExited(proc)) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    proc.once("exit", () => {
      timers.forEach(clearTimeout);
      resolve();
    });
    timers.push(setTimeout(() => proc.kill("SIGTERM"), graceMs));
    timers.push(setTimeout(() => proc.kill("SIGKILL"), 2 * graceMs));
  });
}

/** `p`, or an Error with `message` after `ms` (the timer is cleared either way). */
export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
