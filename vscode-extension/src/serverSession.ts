/** The running language server as the extension sees it: one `LanguageClient` over a
 * `repo2lora serve --stdio` process it starts itself (so it can explain an early exit and stop
 * the process by its id), the status request, the regenerate command and the runtime options. */

import { ChildProcessWithoutNullStreams } from "child_process";
import * as os from "os";
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  State,
} from "vscode-languageclient/node";
import type { ServerState } from "./adapterStatus";
import { ADAPTER_CHANGED, REGENERATE_COMMAND, STATUS_REQUEST } from "./protocol";
import {
  explainEarlyExit,
  hasExited,
  resolveOnHost,
  startServerProcess,
  StderrTail,
  stopProcess,
  withTimeout,
} from "./serverProcess";
import { documentSelector, ExtensionSettings, runtimeOptions, serverLaunch } from "./settings";

const STATUS_TIMEOUT_MS = 10_000;
const RESTARTS_ALLOWED = 3; // crashes within RESTART_WINDOW_MS before giving up
const RESTART_WINDOW_MS = 3 * 60_000;

export interface SessionEvents {
  state(state: ServerState, problem?: string): void;
  status(payload: unknown): void;
  problem(message: string): void; // shown to the user, once per start
}

export class ServerSession implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private process: ChildProcessWithoutNullStreams | undefined;
  private settings: ExtensionSettings | undefined;
  private crashes: number[] = [];
  private problemShown = false;

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly events: SessionEvents,
  ) {}

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  async start(settings: ExtensionSettings): Promise<void> {
    await this.stop();
    this.settings = settings;
    this.problemShown = false;
    if (!settings.enable) {
      this.events.state("disabled");
      return;
    }
    const launch = serverLaunch(settings);
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const resolved = resolveOnHost(launch, folder);
    if (!resolved.ok) {
      this.fail(resolved.problem);
      return;
    }
    this.output.info(`starting ${resolved.command} ${launch.args.join(" ")}`);

    let exited: Promise<void> = Promise.resolve();
    let stderr = new StderrTail();
    let serving = false;
    const serverOptions = async () => {
      stderr = new StderrTail();
      serving = false;
      const proc = startServerProcess(resolved.command, launch, folder ?? os.homedir());
      this.process = proc;
      proc.stderr.on("data", (d: Buffer) => stderr.push(d));
      exited = new Promise((resolve) => proc.once("exit", () => resolve()));
      proc.once("error", (err) => stderr.push(`${err.message}\n`)); // spawn failed
      return proc;
    };
    // the connection closes before the exit is reported: wait briefly for its code and stderr
    const afterExit = () => Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    const earlyExit = () => {
      const proc = this.process;
      return explainEarlyExit(launch, proc?.exitCode ?? null, proc?.signalCode ?? null, stderr.lines());
    };
    const closed = async () => {
      await afterExit();
      const proc = this.process;
      if (!serving) {
        const why = earlyExit();
        this.fail(why);
        return { action: CloseAction.DoNotRestart, message: why, handled: true };
      }
      const now = Date.now();
      this.crashes = [...this.crashes.filter((t) => now - t < RESTART_WINDOW_MS), now];
      if (this.crashes.length > RESTARTS_ALLOWED) {
        const why =
          `repo2lora: the server stopped ${this.crashes.length} times in 3 minutes and is not ` +
          'restarted again; see the log (repo2lora: Show server log), then run "repo2lora: Restart server".';
        this.fail(why);
        return { action: CloseAction.DoNotRestart, message: why, handled: true };
      }
      this.output.warn(`the server stopped (${describeExit(proc)}); restarting it`);
      return { action: CloseAction.Restart, handled: true };
    };

    const clientOptions: LanguageClientOptions = {
      documentSelector: documentSelector(settings.languages),
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: () => runtimeOptions(this.settings ?? settings),
      initializationFailedHandler: () => false,
      errorHandler: {
        error: () => ({ action: ErrorAction.Continue }),
        closed,
      },
      middleware: {
        // the server answers textDocument/completion too; the suggestion list shows it only
        // when asked, ghost text is the main way
        provideCompletionItem: (document, position, context, token, next) =>
          this.settings?.suggestionList ? next(document, position, context, token) : null,
      },
    };
    const client = new LanguageClient("repo2lora", "repo2lora", serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (this.client !== client) {
        return;
      }
      if (e.newState === State.Running) {
        serving = true;
        this.events.state("running");
      } else if (e.newState === State.Starting) {
        this.events.state("starting");
      }
    });
    client.onNotification(ADAPTER_CHANGED, (payload: unknown) => this.events.status(payload));
    this.events.state("starting");
    try {
      await client.start();
    } catch (err) {
      await afterExit();
      if (this.client === client) {
        const proc = this.process;
        const gone = proc !== undefined && hasExited(proc);
        this.fail(gone ? earlyExit() : `repo2lora: the server did not start: ${errorText(err)}`);
      }
    }
  }

  /** Stops the client and, if it is still there after the LSP shutdown, the process. */
  async stop(): Promise<void> {
    const client = this.client;
    const proc = this.process;
    this.client = undefined;
    this.process = undefined;
    if (client) {
      try {
        if (client.state !== State.Stopped) {
          await client.stop(3000);
        }
      } catch (err) {
        this.output.warn(`stopping the server: ${errorText(err)}`);
      }
      await client.dispose().catch(() => undefined);
    }
    if (proc) {
      await stopProcess(proc, 2000);
    }
  }

  async restart(settings: ExtensionSettings): Promise<void> {
    this.crashes = [];
    await this.start(settings);
  }

  /** New runtime options for the running server (the rest need a restart). */
  configure(settings: ExtensionSettings): void {
    this.settings = settings;
    if (this.client && this.running) {
      void this.client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { repo2lora: runtimeOptions(settings) },
      });
    }
  }

  async status(): Promise<unknown> {
    const client = this.requireClient();
    return withTimeout(
      client.sendRequest(STATUS_REQUEST, {}),
      STATUS_TIMEOUT_MS,
      `the status request got no answer within ${STATUS_TIMEOUT_MS / 1000}s`,
    );
  }

  async regenerate(): Promise<unknown> {
    const client = this.requireClient();
    return client.sendRequest(ExecuteCommandRequest.type, { command: REGENERATE_COMMAND, arguments: [] });
  }

  dispose(): void {
    void this.stop();
  }

  private requireClient(): LanguageClient {
    if (!this.client || !this.running) {
      throw new Error('repo2lora: the server is not running; run "repo2lora: Restart server"');
    }
    return this.client;
  }

  private fail(problem: string): void {
    this.output.error(problem);
    this.events.state("stopped", problem);
    if (!this.problemShown) {
      this.problemShown = true;
      this.events.problem(problem);
    }
  }
}

function describeExit(proc: ChildProcessWithoutNullStreams | undefined): string {
  if (!proc) {
    return "no process";
  }
  return proc.signalCode ? `killed by ${proc.signalCode}` : `exit code ${proc.exitCode}`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
