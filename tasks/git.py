"""The app's git repository (`APP_REPO`): recent commits touching given paths, and reverts.

git runs with an argument list, never through a shell; paths are passed after `--`.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from prefect.cache_policies import NONE
from pydantic import BaseModel

from remediate.domain.errors import ConfigError
from remediate.tasks.steps import task

__all__ = ["Commit", "recent_commits", "revert_commit"]


class Commit(BaseModel):
    sha: str
    author: str
    date: str
    subject: str
    files: list[str]


def _git(repo: str, *args: str) -> str:
    if not (Path(repo) / ".git").exists():
        raise ConfigError(f"APP_REPO ({repo}): not a git repository")
    done = subprocess.run(
        ["git", "-C", repo, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"APP_REPO ({repo}): git {args[0]} failed: {done.stderr.strip()[:200]}")
    return done.stdout


@task(name="recent-commits", cache_policy=NONE, tags=["git", "read-only"])
def recent_commits(repo: str, *, since_hours: float, paths: list[str]) -> list[Commit]:
    """Commits of the last `since_hours` touching `paths` (git pathspecs), newest first."""
    out = _git(
        repo,
        "log",
        f"--since={int(since_hours * 3600)} seconds ago",
        "--name-only",
        "--format=%x1e%H%x1f%an%x1f%aI%x1f%s",
        "--",
        *paths,
    )
    commits = []
    for record in out.split("\x1e"):
        if not record.strip():
            continue
        header, _, files = record.partition("\n")
        sha, author, date, subject = header.split("\x1f")
        commits.append(
            Commit(
                sha=sha,
                author=author,
                date=date,
                subject=subject,
                files=[f for f in files.splitlines() if f.strip()],
            )
        )
    return commits


@task(name="git-revert", cache_policy=NONE, tags=["git", "destructive"])
def revert_commit(repo: str, *, sha: str) -> str:
    """`git revert --no-edit SHA` in the app's repository; the new commit's sha.

    Refused (ConfigError) when the work tree has uncommitted changes: a revert must not mix
    with someone's work in progress. Nothing is pushed: deploying stays the team's step.
    """
    if _git(repo, "status", "--porcelain").strip():
        raise ConfigError(f"APP_REPO ({repo}): uncommitted changes; not reverting over them")
    if not _git(repo, "cat-file", "-t", sha).strip() == "commit":
        raise ConfigError(f"APP_REPO ({repo}): {sha} is not a commit")
    try:
        _git(repo, "revert", "--no-edit", sha)
    except ConfigError:
        # A revert that stopped on a conflict is undone; one that never started (a merge
        # without -m) has nothing to undo, and git's own reason is the one to report.
        with contextlib.suppress(ConfigError):
            _git(repo, "revert", "--abort")
        raise
    return _git(repo, "rev-parse", "HEAD").strip()
