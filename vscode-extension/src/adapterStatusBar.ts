/** The status bar item: what `adapterStatus.statusBarView` says, kept current by the server's
 * `repo2lora/adapterChanged` notifications and by polling `repo2lora/status` (often while
 * something changes, rarely when all is current). Clicking it runs "repo2lora: Show status". */

import * as vscode from "vscode";
import { AdapterStatus, Observed, parseStatus, pollIntervalMs, ServerState, statusBarView } from "./adapterStatus";

export class AdapterStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: ServerState = "starting";
  private status: AdapterStatus | undefined;
  private receivedAt = Date.now();
  private down: string | undefined; // why the server is not serving
  private unanswered: string | undefined; // why the running server's last status request failed
  private regenerating = false;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly fetchStatus: () => Promise<unknown>,
    showStatusCommand: string,
  ) {
    this.item = vscode.window.createStatusBarItem("repo2lora.adapter", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "repo2lora adapter";
    this.item.command = showStatusCommand;
    this.render();
    this.item.show();
  }

  observed(): Observed {
    return {
      state: this.state,
      status: this.status,
      elapsedMs: Date.now() - this.receivedAt,
      down: this.down ?? this.unanswered,
      regenerating: this.regenerating,
    };
  }

  setState(state: ServerState, problem?: string): void {
    this.state = state;
    this.down = state === "stopped" ? problem : undefined;
    this.unanswered = undefined;
    if (state !== "running") {
      this.status = undefined;
    }
    this.refreshSoon(state === "running" ? 0 : undefined);
  }

  setStatus(payload: unknown): void {
    this.status = parseStatus(payload);
    this.receivedAt = Date.now();
    this.unanswered = undefined;
    this.refreshSoon();
  }

  setRegenerating(on: boolean): void {
    this.regenerating = on;
    this.refreshSoon(on ? undefined : 0);
  }

  /** Render now; ask the server after `delayMs`, or after the poll interval when not given. */
  refreshSoon(delayMs?: number): void {
    this.render();
    if (this.timer) {
      clearTimeout(this.timer);
    }
    const ms = delayMs ?? pollIntervalMs(this.observed());
    this.timer = this.state === "running" && (ms > 0 || delayMs === 0) ? setTimeout(() => void this.poll(), ms) : undefined;
  }

  private async poll(): Promise<void> {
    if (this.polling) {
      return;
    }
    this.polling = true;
    try {
      this.setStatus(await this.fetchStatus());
    } catch (err) {
      if (this.state === "running") {
        this.unanswered = `the server does not answer: ${err instanceof Error ? err.message : String(err)}`;
      }
      this.refreshSoon();
    } finally {
      this.polling = false;
    }
  }

  private render(): void {
    const view = statusBarView(this.observed());
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.warning ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
  }

  dispose(): void {
    if (this.timer) {
      clearTimeout(this.timer);
    }
    this.item.dispose();
  }
}
