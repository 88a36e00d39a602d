"""tasks/git.py against a real repository made with the `git` binary: recent commits by age and
path, and a revert that changes the repository only when it is clean, and only by one commit."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from remediate.domain.errors import ConfigError
from remediate.tasks.git import recent_commits, revert_commit

HOUR = 3600
README = [f"line {n}" for n in range(1, 13)]


def git(repo: Path, *args: str, at: int | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    if at is not None:
        env |= {"GIT_AUTHOR_DATE": f"@{at} +0000", "GIT_COMMITTER_DATE": f"@{at} +0000"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def write(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)


@dataclass
class Repo:
    path: Path
    origin: Path
    shas: dict[str, str]  # name -> sha
    times: dict[str, int]  # name -> commit time (epoch seconds)

    def __str__(self) -> str:
        return str(self.path)

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """Four commits, 72 h, 30 h, 2 h and 1 h old; `main` pushed to a bare `origin`."""
    path, origin = tmp_path / "app", tmp_path / "origin.git"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test Runner")
    git(path, "config", "user.email", "runner@example.com")
    git(path, "config", "commit.gpgsign", "false")
    now = int(time.time())
    shas, times = {}, {}

    def commit(name: str, subject: str, age_hours: float, author: str | None = None) -> None:
        times[name] = now - int(age_hours * HOUR)
        git(path, "add", "-A")
        args = ["commit", "-q", "-m", subject]
        if author:
            args += ["--author", author]
        git(path, *args, at=times[name])
        shas[name] = git(path, "rev-parse", "HEAD")

    write(path, "app/db.py", "POOL_SIZE = 5\n")
    write(path, "docs/README.md", "\n".join(README) + "\n")
    commit("initial", "initial import", 72)
    write(path, "app/db.py", "POOL_SIZE = 10\n")
    commit("tune", "tune pool", 30)
    write(path, "app/db.py", "POOL_SIZE = 20\n")
    write(path, "docs/README.md", "\n".join(["pool is 20", *README[1:]]) + "\n")
    commit(
        "raise", "raise pool size | hot-fix: 'quotes' & <markup>", 2, "Zoë Dev <zoe@example.com>"
    )
    write(path, "docs/README.md", "\n".join(["pool is 20", *README[1:-1], "typo fixed"]) + "\n")
    commit("docs", "docs: typo", 1)
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(path, "remote", "add", "origin", str(origin))
    git(path, "push", "-q", "origin", "main")
    return Repo(path, origin, shas, times)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# Recent commits.


def test_recent_commits_of_the_last_hours_newest_first_with_their_details(repo: Repo) -> None:
    commits = recent_commits.fn(str(repo), since_hours=24, paths=[])

    assert [c.model_dump() for c in commits] == [
        {
            "sha": repo.shas["docs"],
            "author": "Test Runner",
            "date": iso(repo.times["docs"]),
            "subject": "docs: typo",
            "files": ["docs/README.md"],
        },
        {
            "sha": repo.shas["raise"],
            "author": "Zoë Dev",
            "date": iso(repo.times["raise"]),
            "subject": "raise pool size | hot-fix: 'quotes' & <markup>",
            "files": ["app/db.py", "docs/README.md"],
        },
    ]


@pytest.mark.parametrize(
    ("since_hours", "names"),
    [
        (0.5, []),
        (1.5, ["docs"]),
        (24, ["docs", "raise"]),
        (48, ["docs", "raise", "tune"]),
        (100, ["docs", "raise", "tune", "initial"]),
    ],
)
def test_recent_commits_go_back_since_hours(
    repo: Repo, since_hours: float, names: list[str]
) -> None:
    commits = recent_commits.fn(str(repo), since_hours=since_hours, paths=[])
    assert [c.sha for c in commits] == [repo.shas[n] for n in names]


@pytest.mark.parametrize(
    ("since_hours", "paths", "expected"),
    [
        (24, ["app"], [("raise", ["app/db.py"])]),
        (48, ["app/db.py"], [("raise", ["app/db.py"]), ("tune", ["app/db.py"])]),
        (24, ["*.md"], [("docs", ["docs/README.md"]), ("raise", ["docs/README.md"])]),
        (
            100,
            ["app", "docs"],
            [
                ("docs", ["docs/README.md"]),
                ("raise", ["app/db.py", "docs/README.md"]),
                ("tune", ["app/db.py"]),
                ("initial", ["app/db.py", "docs/README.md"]),
            ],
        ),
        (100, ["migrations"], []),
    ],
)
def test_recent_commits_touching_paths_list_only_those_files(
    repo: Repo, since_hours: float, paths: list[str], expected: list[tuple[str, list[str]]]
) -> None:
    commits = recent_commits.fn(str(repo), since_hours=since_hours, paths=paths)
    assert [(c.sha, c.files) for c in commits] == [(repo.shas[n], f) for n, f in expected]


def test_recent_commits_of_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a git repository"):
        recent_commits.fn(str(tmp_path), since_hours=24, paths=[])


# The revert.


def test_revert_adds_one_commit_undoing_exactly_that_commit_and_pushes_nothing(
    repo: Repo,
) -> None:
    new = revert_commit.fn(str(repo), sha=repo.shas["raise"])

    assert new == repo.head() and new != repo.shas["docs"]
    assert git(repo.path, "rev-parse", "HEAD^") == repo.shas["docs"]
    assert git(repo.path, "log", "-1", "--format=%s") == (
        "Revert \"raise pool size | hot-fix: 'quotes' & <markup>\""
    )
    assert f"This reverts commit {repo.shas['raise']}." in git(
        repo.path, "log", "-1", "--format=%b"
    )
    assert git(repo.path, "log", "-1", "--format=%an <%ae>") == "Test Runner <runner@example.com>"
    assert sorted(git(repo.path, "show", "--name-only", "--format=", "HEAD").splitlines()) == [
        "app/db.py",
        "docs/README.md",
    ]
    # Its change undone, the later commit's change kept.
    assert (repo.path / "app/db.py").read_text() == "POOL_SIZE = 10\n"
    assert (repo.path / "docs/README.md").read_text().splitlines() == [*README[:-1], "typo fixed"]
    assert git(repo.path, "status", "--porcelain") == ""
    assert git(repo.origin, "rev-parse", "main") == repo.shas["docs"]  # nothing pushed


@pytest.mark.parametrize("change", ["modified", "staged"])
def test_revert_over_uncommitted_changes_is_refused_and_changes_nothing(
    repo: Repo, change: str
) -> None:
    write(repo.path, "app/db.py", "POOL_SIZE = 99  # someone's experiment\n")
    if change == "staged":
        git(repo.path, "add", "app/db.py")
    status = git(repo.path, "status", "--porcelain")

    with pytest.raises(ConfigError, match="uncommitted changes; not reverting over them"):
        revert_commit.fn(str(repo), sha=repo.shas["raise"])

    assert repo.head() == repo.shas["docs"]
    assert (repo.path / "app/db.py").read_text() == "POOL_SIZE = 99  # someone's experiment\n"
    assert git(repo.path, "status", "--porcelain") == status


def test_revert_of_something_that_is_not_a_commit_is_refused(repo: Repo) -> None:
    blob = git(repo.path, "rev-parse", f"{repo.shas['raise']}:app/db.py")

    with pytest.raises(ConfigError, match=f"{blob} is not a commit"):
        revert_commit.fn(str(repo), sha=blob)
    with pytest.raises(ConfigError, match="git cat-file failed"):
        revert_commit.fn(str(repo), sha="0" * 40)

    assert repo.head() == repo.shas["docs"]
    assert git(repo.path, "status", "--porcelain") == ""


def test_revert_that_conflicts_is_aborted_and_leaves_the_repository_as_it_was(
    repo: Repo,
) -> None:
    # `tune` set the line that `raise` changed again since: its revert conflicts.
    with pytest.raises(ConfigError, match="git revert failed"):
        revert_commit.fn(str(repo), sha=repo.shas["tune"])

    assert repo.head() == repo.shas["docs"]
    assert git(repo.path, "status", "--porcelain") == ""
    assert not (repo.path / ".git" / "REVERT_HEAD").exists()
    assert not (repo.path / ".git" / "sequencer").exists()
    assert (repo.path / "app/db.py").read_text() == "POOL_SIZE = 20\n"


def test_revert_of_a_merge_is_refused_with_git_s_reason(repo: Repo) -> None:
    git(repo.path, "checkout", "-q", "-b", "feature", repo.shas["tune"])
    write(repo.path, "app/cache.py", "TTL = 60\n")
    git(repo.path, "add", "-A")
    git(repo.path, "commit", "-q", "-m", "add cache")
    git(repo.path, "checkout", "-q", "main")
    git(repo.path, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    merge = repo.head()

    with pytest.raises(ConfigError) as refused:
        revert_commit.fn(str(repo), sha=merge)

    assert repo.head() == merge
    assert git(repo.path, "status", "--porcelain") == ""
    assert "is a merge but no -m option was given" in str(refused.value)
