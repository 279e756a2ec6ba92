/** The real `repo2lora serve --stdio` process, spoken to over LSP with
 * vscode-languageserver-protocol: started with the extension's own `serverLaunch`, so the
 * arguments and initializationOptions under test are the ones the extension sends. */

import * as fs from "fs";
import * as path from "path";
import { ChildProcessWithoutNullStreams } from "child_process";
import {
  createProtocolConnection,
  InitializeResult,
  InlineCompletionList,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LogMessageNotification,
  ProtocolConnection,
  StreamMessageReader,
  StreamMessageWriter,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from "vscode-languageserver-protocol/node";
import { AdapterStatus, assess, parseStatus } from "../../src/adapterStatus";
import { ADAPTER_CHANGED, STATUS_REQUEST } from "../../src/protocol";
import { explainEarlyExit, hasExited, resolveOnHost, startServerProcess, StderrTail, stopProcess } from "../../src/serverProcess";
import { DEFAULT_SETTINGS, ExtensionSettings, serverLaunch, ServerLaunch } from "../../src/settings";
import { waitFor, within } from "./deadline";

export const EXTENSION_ROOT = path.resolve(__dirname, "..", "..", "..");

/** The server program: $REPO2LORA_SERVER, else the checkout's .venv/bin/repo2lora, else
 * `repo2lora` from PATH. */
export function serverProgram(): string {
  if (process.env.REPO2LORA_SERVER) {
    return path.resolve(process.env.REPO2LORA_SERVER);
  }
  const venv = path.resolve(EXTENSION_ROOT, "..", ".venv", "bin", "repo2lora");
  return fs.existsSync(venv) ? venv : "repo2lora";
}

export function testSettings(extra: Partial<ExtensionSettings> = {}): ExtensionSettings {
  return { ...DEFAULT_SETTINGS, serverPath: serverProgram(), model: "tiny-random", debounceMs: 0, ...extra };
}

export interface Message {
  type: number;
  message: string;
}

export class RealServer {
  readonly logs: Message[] = [];
  readonly adapterChanges: unknown[] = [];
  readonly progress: { token: string | number; kind: string; text: string }[] = [];
  readonly stderr = new StderrTail(20000);
  initializeResult: InitializeResult | undefined;

  private constructor(
    readonly launch: ServerLaunch,
    readonly process: ChildProcessWithoutNullStreams,
    readonly connection: ProtocolConnection,
  ) {}

  static start(settings: ExtensionSettings, cwd: string): RealServer {
    const launch = serverLaunch(settings);
    const resolved = resolveOnHost(launch, cwd);
    if (!resolved.ok) {
      throw new Error(resolved.problem);
    }
    const proc = startServerProcess(resolved.command, launch, cwd, {
      ...process.env,
      HF_HUB_OFFLINE: "1",
      TRANSFORMERS_OFFLINE: "1",
    });
    const connection = createProtocolConnection(new StreamMessageReader(proc.stdout), new StreamMessageWriter(proc.stdin));
    const server = new RealServer(launch, proc, connection);
    proc.stderr.on("data", (d: Buffer) => server.stderr.push(d));
    connection.onNotification(LogMessageNotification.type, (m) => {
      server.logs.push(m);
    });
    connection.onNotification(ADAPTER_CHANGED, (p: unknown) => {
      server.adapterChanges.push(p);
    });
    connection.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
      connection.onProgress(WorkDoneProgress.type, params.token, (v) => {
        const text = "title" in v ? v.title : (v.message ?? "");
        server.progress.push({ token: params.token, kind: v.kind, text });
      });
    });
    connection.listen();
    return server;
  }

  async initialize(root: string, timeoutMs = 60_000): Promise<InitializeResult> {
    const uri = `file://${root}`;
    this.initializeResult = await within(
      "initialize",
      this.connection.sendRequest("initialize", {
        processId: process.pid,
        rootUri: uri,
        workspaceFolders: [{ uri, name: path.basename(root) }],
        capabilities: {
          window: { workDoneProgress: true },
          textDocument: { inlineCompletion: {}, completion: {}, synchronization: { didSave: true } },
        },
        initializationOptions: this.launch.initializationOptions,
      }) as Promise<InitializeResult>,
      timeoutMs,
    );
    await this.connection.sendNotification("initialized", {});
    return this.initializeResult;
  }

  status(timeoutMs = 10_000): Promise<unknown> {
    return within(STATUS_REQUEST, this.connection.sendRequest(STATUS_REQUEST, {}), timeoutMs);
  }

  open(uri: string, text: string, languageId = "python"): Promise<void> {
    return this.connection.sendNotification("textDocument/didOpen", {
      textDocument: { uri, languageId, version: 1, text },
    });
  }

  async inlineCompletion(uri: string, line: number, character: number, timeoutMs = 60_000): Promise<InlineCompletionList> {
    const result = await within(
      "textDocument/inlineCompletion",
      this.connection.sendRequest(InlineCompletionRequest.type, {
        textDocument: { uri },
        position: { line, character },
        context: { triggerKind: InlineCompletionTriggerKind.Invoked },
      }),
      timeoutMs,
    );
    if (result === null || Array.isArray(result)) {
      return { items: result ?? [] };
    }
    return result;
  }

  /** The inline completion text at the end of `text` (opened as `uri`), or "" when none. */
  async completionAtEnd(uri: string, text: string): Promise<string> {
    const { line, character } = endOf(text);
    const list = await this.inlineCompletion(uri, line, character);
    const first = list.items[0]?.insertText;
    return typeof first === "string" ? first : (first?.value ?? "");
  }

  exited(): boolean {
    return hasExited(this.process);
  }

  /** Why the process exited, as the extension would tell the user. */
  exitExplanation(): string {
    return explainEarlyExit(this.launch, this.process.exitCode, this.process.signalCode, this.stderr.lines());
  }

  /** LSP shutdown and exit, then the process by its id if it is still there. */
  async stop(): Promise<void> {
    if (!this.exited()) {
      try {
        await within("shutdown", this.connection.sendRequest("shutdown"), 10_000);
        await this.connection.sendNotification("exit");
      } catch {
        // it is stopped below either way
      }
    }
    await stopProcess(this.process, 3000);
    this.connection.dispose();
  }
}

/** `text` with the end-of-file position, as LSP counts it. */
export function endOf(text: string): { line: number; character: number } {
  const lines = text.split("\n");
  return { line: lines.length - 1, character: lines[lines.length - 1].length };
}

const SETTLE_MS = 120_000;

/** The status once the server's adapter is current and for `commit` (polled, up to 2 minutes). */
export async function settledOn(server: RealServer, commit: string): Promise<AdapterStatus> {
  let last: AdapterStatus | undefined;
  return waitFor(
    `adapter for ${commit.slice(0, 7)}`,
    async () => {
      last = parseStatus(await server.status());
      const ok = assess({ state: "running", status: last, elapsedMs: 0 }).health === "current";
      return ok && last.adapter.commit === commit ? last : undefined;
    },
    SETTLE_MS,
    100,
    () => `last status: ${JSON.stringify(last)}; stderr: ${server.stderr.lines().slice(-5).join(" | ")}`,
  );
}
