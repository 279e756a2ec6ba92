/** Real git repositories in a temporary folder, made with the git CLI at fixed dates (so their
 * commits, and the adapters made from them, are the same on every run). */

import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

const GIT_ENV = {
  GIT_AUTHOR_NAME: "Test",
  GIT_AUTHOR_EMAIL: "test@example.com",
  GIT_COMMITTER_NAME: "Test",
  GIT_COMMITTER_EMAIL: "test@example.com",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
};

export class GitRepo {
  private tick = 0;

  constructor(readonly root: string) {
    fs.mkdirSync(root, { recursive: true });
    this.git("init", "-q", "-b", "main");
  }

  static temp(prefix: string): GitRepo {
    return new GitRepo(path.join(fs.mkdtempSync(path.join(os.tmpdir(), prefix)), "project"));
  }

  git(...args: string[]): string {
    const date = `2026-01-01T00:00:${String(this.tick).padStart(2, "0")}+00:00`;
    return execFileSync("git", ["-c", "commit.gpgsign=false", ...args], {
      cwd: this.root,
      env: { ...process.env, ...GIT_ENV, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date },
      encoding: "utf8",
    }).trim();
  }

  write(files: Record<string, string>): void {
    for (const [rel, text] of Object.entries(files)) {
      const p = path.join(this.root, rel);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, text);
    }
  }

  commit(files: Record<string, string>, message: string): string {
    this.write(files);
    this.tick += 1;
    this.git("add", "-A");
    this.git("commit", "-q", "--allow-empty", "-m", message);
    return this.git("rev-parse", "HEAD");
  }

  uri(rel: string): string {
    return `file://${path.join(this.root, rel)}`;
  }

  /** Removes the temporary folder the repository is in. */
  remove(): void {
    fs.rmSync(path.dirname(this.root), { recursive: true, force: true });
  }
}

export const SAMPLE_V1: Record<string, string> = {
  "pkg/__init__.py": '"""Sample package."""\nVERSION = "1.0"\n',
  "pkg/geometry.py":
    "import math\n\nUNIT = 1.0\n\n\n" +
    "def area_of_circle(radius):\n    return math.pi * radius ** 2\n\n\n" +
    "class Vector:\n    dims = 2\n\n    def __init__(self, x, y):\n        self.x = x\n" +
    "        self.y = y\n\n    def norm(self):\n        return math.hypot(self.x, self.y)\n",
  "README.md": "# sample\n",
};

export const SAMPLE_V2: Record<string, string> = {
  "pkg/shapes.py":
    "from pkg.geometry import Vector\n\n\n" +
    "class Polygon:\n    def __init__(self, points):\n        self.points = points\n\n" +
    "    def perimeter(self):\n        return sum(p.norm() for p in self.points)\n",
};

/** A file that uses the package, its last line left open for a completion. */
export const USE_PY =
  "from pkg.geometry import Vector, area_of_circle\n\n\n" +
  "def total_area(radii):\n    return sum(area_of_circle(r) for r in radii)\n\n\n" +
  "def longest(vectors):\n    return max(vectors, key=";
