/** Entry point: reads the settings, starts the server session, and wires the commands, the
 * status bar and the output channel together. The logic lives in the plain modules
 * (`settings`, `adapterStatus`, `serverProcess`); this file only talks to VS Code. */

import * as vscode from "vscode";
import { parseStatus, shortSha, statusLines } from "./adapterStatus";
import { AdapterStatusBar } from "./adapterStatusBar";
import { ServerSession } from "./serverSession";
import { ExtensionSettings, needsRestart, readSettings } from "./settings";

const COMMANDS = {
  regenerate: "repo2lora.regenerateAdapter",
  showStatus: "repo2lora.showStatus",
  restart: "repo2lora.restartServer",
  showLog: "repo2lora.showLog",
};

let session: ServerSession | undefined;

function currentSettings(): ExtensionSettings {
  const config = vscode.workspace.getConfiguration("repo2lora");
  return readSettings((key) => config.get(key));
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("repo2lora", { log: true });
  let settings = currentSettings();
  const statusBar = new AdapterStatusBar(() => server.status(), COMMANDS.showStatus);
  const server = new ServerSession(output, {
    state: (state, problem) => statusBar.setState(state, problem),
    status: (payload) => statusBar.setStatus(payload),
    problem: (message) => void showProblem(message, output),
  });
  session = server;
  context.subscriptions.push(output, statusBar, server);

  context.subscriptions.push(
    vscode.commands.registerCommand(COMMANDS.showLog, () => output.show(true)),
    vscode.commands.registerCommand(COMMANDS.restart, async () => {
      settings = currentSettings();
      await server.restart(settings);
    }),
    vscode.commands.registerCommand(COMMANDS.regenerate, () => regenerate(server, statusBar)),
    vscode.commands.registerCommand(COMMANDS.showStatus, () => showStatus(server, statusBar)),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration("repo2lora")) {
        return;
      }
      const next = currentSettings();
      const restart = needsRestart(settings, next) || (next.enable && !server.running);
      settings = next;
      if (restart) {
        await server.restart(next);
      } else {
        server.configure(next);
      }
    }),
    vscode.window.onDidChangeWindowState((w) => w.focused && statusBar.refreshSoon(0)),
  );
  await server.start(settings);
}

export async function deactivate(): Promise<void> {
  await session?.stop();
  session = undefined;
}

async function showProblem(message: string, output: vscode.LogOutputChannel): Promise<void> {
  const settingsAction = "Open Settings";
  const logAction = "Show Log";
  const pick = await vscode.window.showErrorMessage(message, settingsAction, logAction);
  if (pick === settingsAction) {
    await vscode.commands.executeCommand("workbench.action.openSettings", "repo2lora");
  } else if (pick === logAction) {
    output.show(true);
  }
}

async function regenerate(server: ServerSession, statusBar: AdapterStatusBar): Promise<void> {
  statusBar.setRegenerating(true);
  try {
    const payload = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "repo2lora: regenerating the adapter" },
      () => server.regenerate(),
    );
    statusBar.setStatus(payload);
    const s = parseStatus(payload);
    void vscode.window.showInformationMessage(
      `repo2lora: adapter regenerated for commit ${shortSha(s.adapter.commit)} (version ${s.adapter.version}).`,
    );
  } catch (err) {
    void vscode.window.showErrorMessage(err instanceof Error ? err.message : String(err));
  } finally {
    statusBar.setRegenerating(false);
  }
}

/** A quick pick: the commands first, then one row per status line. */
async function showStatus(server: ServerSession, statusBar: AdapterStatusBar): Promise<void> {
  if (server.running) {
    try {
      statusBar.setStatus(await server.status());
    } catch {
      // the status bar already says the server does not answer; show what is known
    }
  }
  type Item = vscode.QuickPickItem & { run?: () => unknown };
  const actions: Item[] = [
    { label: "$(sync) Regenerate adapter", run: () => vscode.commands.executeCommand(COMMANDS.regenerate) },
    { label: "$(debug-restart) Restart server", run: () => vscode.commands.executeCommand(COMMANDS.restart) },
    { label: "$(output) Show server log", run: () => vscode.commands.executeCommand(COMMANDS.showLog) },
    {
      label: "$(settings-gear) Settings",
      run: () => vscode.commands.executeCommand("workbench.action.openSettings", "repo2lora"),
    },
  ];
  const rows: Item[] = statusLines(statusBar.observed()).map((l) => ({ label: l.value, description: l.label }));
  const pick = await vscode.window.showQuickPick<Item>(
    [...actions, { label: "Status", kind: vscode.QuickPickItemKind.Separator }, ...rows],
    { title: "repo2lora", placeHolder: "repo2lora status and commands" },
  );
  await pick?.run?.();
}
