"""`make audit-eval`: the audit's precision on real code, beside ruff's and flake8-async's
ASYNC rules on the same code.

Thirty corpora, each a list of source distributions pinned by name, version and sha256,
downloaded with pip from the package index into ``.venv/audit-eval/`` (never committed):

- ``seen`` (``corpus.txt``, labels in ``labels.csv``): read while the rules were written;
- ``holdout`` (``holdout.txt``, labels in ``holdout_labels.csv``): chosen and pinned before
  any of its findings was read; its first run, with the rules as they were then, is the
  figure for unseen code (RESULTS.md keeps it in its own block, ``holdout-unseen``);
- ``holdout2`` (``holdout2.txt``, labels in ``holdout2_labels.csv``): a second held-out
  corpus, pinned before the audit ran on it, once the first had been read for fixes; its
  first run is in the block ``holdout2-unseen``;
- ``holdout3`` (``holdout3.txt``, labels in ``holdout3_labels.csv``): a third, pinned before
  the audit ran on it, once the second had been read for fixes; its first run is in the
  block ``holdout3-unseen``;
- ``holdout4`` (``holdout4.txt``, labels in ``holdout4_labels.csv``): a fourth, pinned with
  the rules made stricter on the four labelled corpora above (used as a training set) and
  before the audit ran on it; its first run is in the block ``holdout4-unseen``;
- ``holdout5`` (``holdout5.txt``, labels in ``holdout5_labels.csv``): a fifth, pinned
  (committed) before the audit ran on it, once the fourth had been read for fixes; its first
  run is in the block ``holdout5-unseen``;
- ``holdout6`` (``holdout6.txt``, labels in ``holdout6_labels.csv``): a sixth, chosen for
  threads, retry loops and tasks spawned in loops (the rules ADM102, ADM302 and ADM402, which
  the fifth hardly exercised), pinned (committed) before the audit ran on it; its first run
  is in the block ``holdout6-unseen``;
- ``holdout7`` (``holdout7.txt``, labels in ``holdout7_labels.csv``): a seventh, chosen for
  retry loops and threads in mostly synchronous clients and task queues, pinned (committed)
  before the audit ran on it, once the sixth had been read for fixes; its first run is in
  the block ``holdout7-unseen``;
- ``holdout8`` (``holdout8.txt``, labels in ``holdout8_labels.csv``): an eighth, a mix of
  async frameworks, clients and services, pinned (committed) before the audit ran on it, once
  the seventh had been read for fixes; its first run is in the block ``holdout8-unseen``;
- ``holdout9`` (``holdout9.txt``, labels in ``holdout9_labels.csv``): a ninth, async clients,
  SDKs, bots and stream processors with threads and retries, pinned (committed) before the
  audit ran on it, once the eighth had been read for fixes; its first run is in the block
  ``holdout9-unseen``;
- ``holdout10`` (``holdout10.txt``, labels in ``holdout10_labels.csv``): a tenth, crawlers,
  task queues, device and chat clients, pinned in the same commit as the ninth; run once,
  with the rules of round 12 (made on the ten corpora before it), its first run (block
  ``holdout10-unseen``) was the estimate of precision on unseen code of those rules (round
  13 read its false positives for fixes);
- ``holdout11`` (``holdout11.txt``, labels in ``holdout11_labels.csv``): an eleventh, a web
  framework's apps, a cloud SDK, a model hub client, database, queue, chat, voice and
  home-automation clients and a crawler, pinned (committed) before the audit ran on it, once
  the tenth had been run; its first run (block ``holdout11-unseen``) is the estimate of
  precision on unseen code of round 13's rules (round 14 read its false positives for fixes);
- ``holdout12`` (``holdout12.txt``, labels in ``holdout12_labels.csv``): a twelfth, a terminal
  UI framework, a pre-fork server, a blockchain client, a notebook server, a WSGI/ASGI
  framework, ZeroMQ's bindings and an SMTP server, pinned (committed) before the audit ran
  on it, once the eleventh had been run; its first run (block ``holdout12-unseen``) is the
  estimate of precision on unseen code of round 14's rules (round 15 read its false
  positives for fixes);
- ``holdout13`` (``holdout13.txt``, labels in ``holdout13_labels.csv``): a thirteenth,
  weighted towards threads and executors: a batch-job scheduler, S3's transfer manager, a
  stream fetcher, a terminal UI toolkit, a task runner, a thread-pool HTTP server, an RPC
  library and a testing tool's gateway library, pinned (committed) before the audit ran on
  it, once the twelfth had been run; its first run (block ``holdout13-unseen``) is the
  estimate of precision on unseen code of round 14's rules (round 15 read its false
  positives for fixes, with the twelfth's);
- ``holdout14`` (``holdout14.txt``, labels in ``holdout14_labels.csv``): a fourteenth,
  weighted towards asyncio: an MQTT broker and client, an OPC UA client and server, an FTP
  client and server, an async PostgreSQL client, a cloud storage SDK, a HomeKit accessory
  server, a chat-bot framework, a headless-browser automation library and a job scheduler,
  pinned (committed) before the audit ran on it, once the thirteenth had been read; its
  first run (block ``holdout14-unseen``) is the estimate of precision on unseen code of
  round 15's rules (round 16 read its false positives for fixes);
- ``holdout15`` (``holdout15.txt``, labels in ``holdout15_labels.csv``): a fifteenth,
  weighted towards the code the audit's users write: four LLM APIs' clients, two agent
  frameworks' runtimes and agents, an async database layer, a FastAPI user-management
  library and an async scraper with its account pool, pinned (committed) before the audit
  ran on it, once the fourteenth had been read; its first run (block ``holdout15-unseen``)
  is the estimate of precision on unseen code of round 16's rules (round 17 read its false
  positive for fixes);
- ``holdout16`` (``holdout16.txt``, labels in ``holdout16_labels.csv``): a sixteenth,
  chosen for hand-written async application code (fan-out, retries, clients per call,
  threads): a browser-driving LLM agent, three LLM applications that fan calls out over
  documents, an agents' memory layer, two crawlers, a download manager, a self-hosted bot
  server and a load generator, pinned (committed) before the audit ran on it, once the
  fifteenth had been read; its first run (block ``holdout16-unseen``) is the estimate of
  precision on unseen code of round 17's rules (round 18 read its false positives for
  fixes);
- ``holdout17`` (``holdout17.txt``, labels in ``holdout17_labels.csv``): a seventeenth,
  chosen for hand-written LLM application and agent code, the code the audit's users
  write: two agent frameworks, a framework of LLM programs optimised over many calls, an
  LLM pipeline framework, an AI-functions library, an embeddings and semantic-search
  service, a chat-application server for LLM apps and a coding agent at the terminal,
  pinned (committed) before the audit ran on it, once the sixteenth had been read; its
  first run (block ``holdout17-unseen``) is the estimate of precision on unseen code of
  round 19's rules (round 20 read its false positives for fixes);
- ``holdout18`` (``holdout18.txt``, labels in ``holdout18_labels.csv``): an eighteenth,
  chosen for hand-written async application code outside LLMs: four chat bots and bot
  frameworks (Discord, Telegram, VK), three task queues and workers' service layers and
  three async database layers (an ORM, a MongoDB ODM, sqlite3 on a thread), pinned
  (committed) before the audit ran on it, once the sixteenth had been read; its first run
  (block ``holdout18-unseen``) is the estimate of precision on unseen code of round 19's
  rules (round 20 read its false positives for fixes);
- ``holdout19`` (``holdout19.txt``, labels in ``holdout19_labels.csv``): a nineteenth,
  chosen for the code the audit's users write around async web services, API back ends,
  HTTP clients and LLM APIs: five web applications and app frameworks on FastAPI and
  Starlette (full-stack and web-UI frameworks, two admin interfaces, CRUD endpoints), three
  HTTP-client tools and two LLM API layers (an agent framework over many providers, an
  LLM CLI and library), pinned (committed) before the audit ran on it, once round 20 was
  merged; its first run (block ``holdout19-unseen``) is the estimate of precision on
  unseen code of round 20's rules;
- ``holdout20`` (``holdout20.txt``, labels in ``holdout20_labels.csv``): a twentieth,
  chosen for threads, so that ADM302 and ADM303 get findings enough to measure: code that
  runs threads and thread pools around services, as the audit's users' code does: seven
  observability, error and metrics clients with background flush, sender and poller
  threads (two LLM logging and observability SDKs, OpenTelemetry's SDK, an APM agent,
  DogStatsD, an error reporter, Prometheus's client), two feature-flag SDKs with polling
  and streaming threads, and three servers and service tools on threads (a web framework
  and a WSGI server on thread pools, the Docker API client), pinned (committed) before the
  audit ran on it, with round 20's rules on main; its first run (block
  ``holdout20-unseen``) is the estimate of precision on unseen code of round 20's rules;
- ``holdout21`` (``holdout21.txt``, labels in ``holdout21_labels.csv``): a twenty-first
  (pinned at the same time as holdout20, on another branch), chosen for the
  code the audit's users write around async services and LLM APIs: three agent frameworks
  and LLM app back ends (agent graphs, an LLM framework of agents and tools, the
  Agent2Agent protocol's client and server), three vector-store clients with async APIs and
  five async web frameworks and extensions (a web framework on a Rust runtime, pagination,
  rate limiting, server-sent events, response caching), pinned (committed) before the audit
  ran on it, with round 20's rules (main at fc42bc9); its first run (block
  ``holdout21-unseen``) is the estimate of precision on unseen code of those rules;
- ``holdout22`` (``holdout22.txt``, labels in ``holdout22_labels.csv``): a twenty-second,
  chosen for the code the audit's users write around async services, API clients, LLM APIs
  and jobs: two async web frameworks and API back ends (an ASGI framework, a spec-first
  API framework), five HTTP and API clients with sync and async sides (an HTTP client, an
  HTTP cache, OAuth and OpenID, Keycloak's admin client, a SOAP client), three LLM API and
  agent-tool clients and two task and job runners (durable workflows and queues,
  event-driven functions and steps), pinned (committed) before the audit ran on it, with
  round 21's rules (main at 4cf8bb2); its first run (block ``holdout22-unseen``) is the
  estimate of precision on unseen code of those rules;
- ``holdout23`` (``holdout23.txt``, labels in ``holdout23_labels.csv``): a twenty-third,
  chosen for the code the audit's users write around async services, API clients, LLM APIs
  and jobs: five async web services and API back ends (two async web frameworks, a
  model-serving framework, a Django API framework, an admin back end on Starlette), three
  HTTP and API clients with sync and async sides (a declarative HTTP client, a search
  engine's client, an exchange's client), two LLM API glue and agent-tool libraries (LLM
  output validation, an agent framework) and two task and job runners (Django's task queue,
  a microservice and worker framework), pinned (committed) before the audit ran on it,
  with round 21's final rules (main at 097bca9); its first run (block
  ``holdout23-unseen``) is the estimate of precision on unseen code of those rules;
- ``holdout24`` (``holdout24.txt``, labels in ``holdout24_labels.csv``): a twenty-fourth,
  chosen for the code the audit's users write around async services, API clients, LLM APIs,
  jobs and databases: three async web services and API back ends (an ASGI framework, a
  GraphQL server, Celery's monitoring service), three HTTP and API clients with sync and
  async sides (a search API's client, a GPU cloud's client and serverless worker, an aiohttp
  response cache), two LLM API glue and agent-tool libraries (LangChain's OpenAI models,
  agents over MCP), a task queue and three database and queue clients with async sides (a
  Redis client, SQLAlchemy repositories and services, a message queue's client), pinned
  (committed) before the audit ran on it, with round 21's final rules (main at 706b31b);
  its first run (block ``holdout24-unseen``) is the estimate of precision on unseen code of
  those rules;
- ``holdout25`` (``holdout25.txt``, labels in ``holdout25_labels.csv``): a twenty-fifth,
  chosen for the same code: an API framework on Django, three HTTP and API clients with sync
  and async sides (a serverless cloud's client, the LangGraph API's client, a search
  engine's client), five LLM API glue and agent-tool libraries (agents and middleware, model
  clients and code executors, agentic workflows, text to SQL, LLM scraping pipelines), a
  periodic task scheduler and two cache and queue clients with async sides (an async cache,
  a RabbitMQ Streams client), pinned (committed) with holdout24, before the audit ran on
  either, and sealed until round 22's final rules (main at a6d1681); its first run (block
  ``holdout25-unseen``) is the estimate of precision on unseen code of those rules;
- ``holdout26`` (``holdout26.txt``, labels in ``holdout26_labels.csv``): a twenty-sixth,
  chosen for the same code: two async web services and API back ends (an async web
  framework, Sanic's extensions), two HTTP and API clients with sync and async sides (a
  realtime messaging service's client, GitHub's API client), three LLM API glue and
  agent-tool libraries (LangChain's Bedrock and Anthropic models, an LLM tool-calling
  framework), two task and job runners (a PostgreSQL job queue, a workflow engine's job
  worker) and three database and queue clients with async sides (a vector search client, an
  object mapper and a rate limiter's storages, all over Redis and more), pinned (committed)
  before the audit ran on it and before holdout25's first run, and sealed until round 22's
  final rules (main at 717e3d3); its first run (block ``holdout26-unseen``) is the estimate
  of precision on unseen code of those rules;
- ``holdout27`` (``holdout27.txt``, labels in ``holdout27_labels.csv``): a twenty-seventh,
  chosen for the same code: two async web services and API back ends (a model-serving API
  server, Django Channels' ASGI server), two HTTP and API clients with sync and async sides
  (a Kubernetes API client, Notion's API client), three LLM API glue libraries (structured
  generation, LangChain's Gemini and Vertex AI models and tools), three task and job runners
  (an async job queue over several brokers, a parallel task runner, an actor system) and two
  database clients with async sides (an in-process Redis server and client, ArangoDB's async
  client), pinned (committed) before the audit ran on it and before holdout26's first run,
  and sealed until the rules of main at 075783f (round 22's final rules and two readings from
  holdout26); its first run (block ``holdout27-unseen``) is the estimate of precision on
  unseen code of those rules;
- ``holdout28`` (``holdout28.txt``, labels in ``holdout28_labels.csv``): a twenty-eighth,
  chosen for the same code: four async web services and API back ends (a multi-user notebook
  server, an async reactive web framework, an HTTP proxy and web server, a dependency-injection
  container for web frameworks), two HTTP and API clients with sync and async sides (SOCKS and
  HTTP proxy clients, ClickHouse's HTTP client), three LLM API glue and agent-tool libraries
  (NVIDIA's guardrails runtime, LangChain's PostgreSQL and MongoDB stores and tools), two task
  and job runners (a process-pool executor, asyncio job schedulers) and a queue client with an
  async side (Django Channels' Redis layers), pinned (committed) before the audit ran on it and
  before holdout27's first run, and sealed until the rules of main at 2b5c722 (rounds 23 and 24
  from holdout27's false positives, and a synchronous HTTP client's close() read as no blocking
  call); its first run (block ``holdout28-unseen``) is the estimate of precision on unseen code
  of those rules;
- ``holdout29`` (``holdout29.txt``, labels in ``holdout29_labels.csv``): a twenty-ninth,
  chosen for the same code: three async web services and protocol servers (ASGI's sync/async
  bridges, an asyncio CoAP client and server, an asyncio monitor), two HTTP and API clients
  with sync and async sides (an HTTP client on Twisted, OpenSearch's client), two bots and
  crawlers (a Discord bot library, a browser-automation library over the DevTools Protocol),
  two LLM API glue and agent-tool libraries (LangChain's MCP adapters, LangGraph's PostgreSQL
  checkpointer) and three task and job runners (an async notebook executor, streaming
  pipelines on tornado, sync and async retrying), pinned (committed) before the audit ran on it
  and before holdout28's first run, and sealed until the rules of main at ef5b362 (round 25,
  from holdout28's false positives after its unseen run); its first run (block
  ``holdout29-unseen``) is the estimate of precision on unseen code of those rules;
- ``holdout30`` (``holdout30.txt``, labels in ``holdout30_labels.csv``): a thirtieth, chosen
  for the same code: two async web services and protocol servers (a small async web framework,
  an asyncio WebSocket server syncing CRDT documents), two DNS and API clients with sync and
  async sides (AWS's clients on asyncio, a DNS toolkit with asyncio and trio resolvers), two
  bots and crawlers (a Discord bot library, a browser-automation library over the DevTools
  Protocol), three LLM API glue and agent-tool libraries (E2B's sandbox SDK, LlamaIndex's
  workflow engine, LangGraph's SQLite checkpointer) and three database and queue clients with
  async sides (Azure Event Hubs' client, an async MongoDB ODM, an asyncio MQTT client), pinned
  (committed) before the audit ran on it, with the rules of main at cbcf710; sealed: fetched
  but not run until the next rules are final, whose estimate of precision on unseen code its
  first run (block ``holdout30-unseen``) is then.

Every finding of ``admission audit`` is labelled (TP or FP, with the context and a note): a
finding without a label fails the run, so the labels stay complete as the rules change. The
labelling rule: TP when the code really does what the finding says (the fan-out grows with
data, the thread is never joined, the retry waits a fixed delay, ...), whatever the context
(library, test, example: the ``context`` column); FP when the finding misreads the code.

Ruff's reports of files it cannot parse (``invalid-syntax``) are left out of its findings,
as our parse errors are counted apart from ours.

Printed (markdown), per corpus: per project, the three tools' findings and times; per rule,
findings, TP, FP, precision with its 95 % Wilson interval; overall; false positives per kLOC;
ruff's and flake8-async's ASYNC findings per kLOC. Where ruff's findings on a corpus are
labelled (``NAME_ruff_labels.csv``, same columns, ``code`` being ruff's), by the same rule
applied to ruff's own message (TP: the code does what the message says is wrong; FP: the
rule misreads the code, e.g. a name matched where the thing named is not what the rule is
about; the reading unfavourable to us, i.e. TP, when in doubt), ruff's precision per rule and
both tools' false positives per kLOC side by side, with the verdict on "ours no higher than
ruff's"; a ruff finding without a label fails the run as ours do. Over two or more such
corpora, the same comparison over all of them (block ``ruff-labelled``). flake8-async's
findings are not labelled. ``--write-results`` puts each corpus's tables into
benches/RESULTS.md between ``<!-- audit-eval:NAME -->`` and
``<!-- /audit-eval:NAME -->`` (NAME the corpus, or ``--block``): the figures there are this
script's output, never copied by hand.

    .venv/bin/python benches/audit_eval/run.py
        [--corpus seen holdout holdout2 ... holdout30] [--no-flake8]
        [--allow-unlabelled] [--write-results] [--block NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".venv" / "audit-eval"
BIN = Path(sys.executable).parent
RESULTS = REPO / "benches" / "RESULTS.md"
RULES = "python/admission/audit"

# corpus name: (pinned sdists, labels)
CORPORA = {
    "seen": ("corpus.txt", "labels.csv"),
    "holdout": ("holdout.txt", "holdout_labels.csv"),
    "holdout2": ("holdout2.txt", "holdout2_labels.csv"),
    "holdout3": ("holdout3.txt", "holdout3_labels.csv"),
    "holdout4": ("holdout4.txt", "holdout4_labels.csv"),
    "holdout5": ("holdout5.txt", "holdout5_labels.csv"),
    "holdout6": ("holdout6.txt", "holdout6_labels.csv"),
    "holdout7": ("holdout7.txt", "holdout7_labels.csv"),
    "holdout8": ("holdout8.txt", "holdout8_labels.csv"),
    "holdout9": ("holdout9.txt", "holdout9_labels.csv"),
    "holdout10": ("holdout10.txt", "holdout10_labels.csv"),
    "holdout11": ("holdout11.txt", "holdout11_labels.csv"),
    "holdout12": ("holdout12.txt", "holdout12_labels.csv"),
    "holdout13": ("holdout13.txt", "holdout13_labels.csv"),
    "holdout14": ("holdout14.txt", "holdout14_labels.csv"),
    "holdout15": ("holdout15.txt", "holdout15_labels.csv"),
    "holdout16": ("holdout16.txt", "holdout16_labels.csv"),
    "holdout17": ("holdout17.txt", "holdout17_labels.csv"),
    "holdout18": ("holdout18.txt", "holdout18_labels.csv"),
    "holdout19": ("holdout19.txt", "holdout19_labels.csv"),
    "holdout20": ("holdout20.txt", "holdout20_labels.csv"),
    "holdout21": ("holdout21.txt", "holdout21_labels.csv"),
    "holdout22": ("holdout22.txt", "holdout22_labels.csv"),
    "holdout23": ("holdout23.txt", "holdout23_labels.csv"),
    "holdout24": ("holdout24.txt", "holdout24_labels.csv"),
    "holdout25": ("holdout25.txt", "holdout25_labels.csv"),
    "holdout26": ("holdout26.txt", "holdout26_labels.csv"),
    "holdout27": ("holdout27.txt", "holdout27_labels.csv"),
    "holdout28": ("holdout28.txt", "holdout28_labels.csv"),
    "holdout29": ("holdout29.txt", "holdout29_labels.csv"),
    "holdout30": ("holdout30.txt", "holdout30_labels.csv"),
}

LabelKey = tuple[str, str, int, str]  # project, path, line, code


@dataclass
class Project:
    name: str  # "litellm-1.67.0"
    root: Path
    lines: int


@dataclass
class Run:
    project: Project
    ours: int
    ours_s: float
    ruff: int
    ruff_s: float
    flake8: int | None  # None: not run
    flake8_s: float


def _run(command: list[str], cwd: Path) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout, elapsed


def fetch(corpus: str) -> list[Project]:
    """Download (pinned by hash) and unpack a corpus; its projects, in a fixed order."""
    pinned = HERE / CORPORA[corpus][0]
    names = [
        line.split("==")[0].strip()
        for line in pinned.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    downloads = CACHE / corpus / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    # Only the corpus's own packages as sdists: their build dependencies (needed to read the
    # metadata) come as wheels, not built from source.
    pip += [f"--no-binary={','.join(names)}", "--require-hashes", "-r", str(pinned)]
    subprocess.run([*pip, "-d", str(downloads)], check=True, timeout=1800)
    projects = []
    for archive in sorted(downloads.glob("*.tar.gz")):
        name = archive.name.removesuffix(".tar.gz")
        root = CACHE / "src" / name
        if not root.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(CACHE / "src", filter="data")
        lines = sum(p.read_bytes().count(b"\n") for p in root.rglob("*.py"))
        projects.append(Project(name, root, lines))
    return projects


def ours(project: Project, config: Path) -> tuple[list[LabelKey], float]:
    command = [sys.executable, "-m", "admission", "audit", "--format", "json", "--exit-zero"]
    out, elapsed = _run([*command, "--config", str(config), "."], project.root)
    keys = [
        (project.name, str(found["path"]), int(found["line"]), str(found["code"]))
        for found in json.loads(out)["findings"]
    ]
    return keys, elapsed


def ruff_async(project: Project) -> tuple[list[LabelKey], float]:
    ruff = str(BIN / "ruff") if (BIN / "ruff").exists() else "ruff"
    command = [ruff, "check", "--isolated", "--select", "ASYNC", "--output-format", "json"]
    out, elapsed = _run([*command, "--exit-zero", "."], project.root)
    keys = [
        (
            project.name,
            Path(found["filename"]).relative_to(project.root).as_posix(),
            int(found["location"]["row"]),
            str(found["code"]),
        )
        for found in json.loads(out)
        # a file ruff cannot parse is reported as `invalid-syntax`: not a finding of its ASYNC
        # rules (ours are counted apart from the findings too, as parse errors)
        if str(found["code"]).startswith("ASYNC")
    ]
    return keys, elapsed


def flake8_async(project: Project) -> tuple[int, float]:
    command = [sys.executable, "-m", "flake8", "--isolated", "--select", "ASYNC", "."]
    out, elapsed = _run(command, project.root)
    return len([line for line in out.splitlines() if ": ASYNC" in line]), elapsed


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def read_labels(path: Path) -> dict[LabelKey, dict[str, str]]:
    """The labels of a file; none when it does not exist yet (a corpus pinned and not yet
    labelled: every finding is then unlabelled, and the run fails unless told otherwise)."""
    labels: dict[LabelKey, dict[str, str]] = {}
    if not path.exists():
        return labels
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            labels[(row["project"], row["path"], int(row["line"]), row["code"])] = row
    return labels


def ruff_labels_file(corpus: str) -> Path:
    """Where ruff's ASYNC findings on ``corpus`` are labelled (the file may not exist)."""
    return HERE / f"{corpus}_ruff_labels.csv"


def rules_version() -> str:
    """The commit the rules were run at (HEAD, and the last commit that changed them)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("log", "-1", "--format=%h", "--", RULES)
    dirty = " with uncommitted changes" if git("status", "--porcelain", "--", RULES) else ""
    return f"`{RULES}` at {head}{dirty} (last changed in {changed})"


@dataclass
class Tally:
    """One tool's findings on a corpus, looked up in its labels: TP and FP per rule."""

    per_rule: dict[str, Counter[str]]
    unlabelled: list[str]  # "project:path:line:code" of the findings without a label
    matched: set[LabelKey]  # the labels that some finding matched

    @classmethod
    def of(cls, found: list[LabelKey], labels: dict[LabelKey, dict[str, str]]) -> Tally:
        tally = cls({}, [], set())
        for key in found:
            label = labels.get(key)
            if label is None:
                tally.unlabelled.append(":".join(map(str, key)))
                continue
            tally.matched.add(key)
            tally.per_rule.setdefault(key[3], Counter())[label["label"]] += 1
        return tally

    def count(self, label: str) -> int:
        return sum(counts[label] for counts in self.per_rule.values())


@dataclass
class Comparison:
    """Ours and ruff's labelled findings on one corpus (``ruff`` None: not labelled there)."""

    corpus: str
    kloc: float
    ours: Tally
    ruff: Tally | None


def precision_row(name: str, tp: int, fp: int, kloc: float | None = None) -> str:
    low, high = wilson(tp, tp + fp)
    row = (
        f"| {name} | {tp + fp} | {tp} | {fp} | {tp / max(tp + fp, 1):.0%} | {low:.0%}-{high:.0%} |"
    )
    return row if kloc is None else f"{row} {fp / kloc:.3f} |"


def rule_table(tally: Tally) -> list[str]:
    out = [
        "| rule | findings | TP | FP | precision | 95 % interval |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for code in sorted(tally.per_rule):
        out.append(precision_row(code, tally.per_rule[code]["TP"], tally.per_rule[code]["FP"]))
    out.append(precision_row("all", tally.count("TP"), tally.count("FP")))
    return out


def side_by_side(comparisons: list[Comparison]) -> list[str]:
    """Both tools' precision and false positives per kLOC on the same code (the corpora whose
    ruff findings are labelled), and the verdict on "ours no higher than ruff's"."""
    labelled = [(each.kloc, each.ours, each.ruff) for each in comparisons if each.ruff]
    kloc = sum(each[0] for each in labelled)
    ours_tp, ours_fp = (
        sum(tally.count(label) for _, tally, _ in labelled) for label in ("TP", "FP")
    )
    ruff_tp, ruff_fp = (sum(ruff.count(label) for _, _, ruff in labelled) for label in ("TP", "FP"))
    ours_per_kloc, ruff_per_kloc = ours_fp / kloc, ruff_fp / kloc
    holds = "holds" if ours_per_kloc <= ruff_per_kloc else "does not hold"
    return [
        "| tool | findings | TP | FP | precision | 95 % interval | FP per kLOC |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
        precision_row("admission audit", ours_tp, ours_fp, kloc),
        precision_row("ruff ASYNC", ruff_tp, ruff_fp, kloc),
        "",
        f"Our false positives per kLOC no higher than ruff's: {holds} ({ours_per_kloc:.3f} "
        f"against {ruff_per_kloc:.3f}, {kloc:.1f} kLOC).",
    ]


def evaluate(corpus: str, *, no_flake8: bool) -> tuple[str, Comparison]:
    """One corpus's tables (markdown), and both tools' findings looked up in their labels."""
    projects = fetch(corpus)
    config = CACHE / "audit-eval.toml"
    config.write_text("[tool.admission.audit]\n")  # the defaults, whatever surrounds the corpus
    labels = read_labels(HERE / CORPORA[corpus][1])
    ruff_file = ruff_labels_file(corpus)
    ruff_labels = read_labels(ruff_file) if ruff_file.exists() else None

    our_found: list[LabelKey] = []
    ruff_found: list[LabelKey] = []
    runs = []
    for project in projects:
        found, our_time = ours(project, config)
        ruff_keys, ruff_time = ruff_async(project)
        flake8_count, flake8_time = (None, 0.0) if no_flake8 else flake8_async(project)
        our_found += found
        ruff_found += ruff_keys
        runs.append(
            Run(project, len(found), our_time, len(ruff_keys), ruff_time, flake8_count, flake8_time)
        )
    tally = Tally.of(our_found, labels)
    ruff_tally = None if ruff_labels is None else Tally.of(ruff_found, ruff_labels)

    kloc = sum(run.project.lines for run in runs) / 1000
    out = [
        f"Corpus `{corpus}` ({CORPORA[corpus][0]}, labels in {CORPORA[corpus][1]}): "
        f"{len(runs)} projects, {kloc:.1f} kLOC; rules: {rules_version()}.",
        "",
        "| project | kLOC | admission audit | s | ruff ASYNC | s | flake8-async | s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        flake8 = "- | -" if run.flake8 is None else f"{run.flake8} | {run.flake8_s:.1f}"
        out.append(
            f"| {run.project.name} | {run.project.lines / 1000:.1f} | {run.ours} | "
            f"{run.ours_s:.1f} | {run.ruff} | {run.ruff_s:.1f} | {flake8} |"
        )
    out += ["", *rule_table(tally)]
    n_all = tally.count("TP") + tally.count("FP")
    peers = f"{sum(run.ruff for run in runs) / kloc:.3f} (ruff ASYNC)"
    if not no_flake8:
        peers += f", {sum(run.flake8 or 0 for run in runs) / kloc:.3f} (flake8-async)"
    else:
        peers += "; flake8-async not run (`--no-flake8`)"
    out += [
        "",
        f"False positives per kLOC: {tally.count('FP') / kloc:.3f} (admission audit). Findings "
        f"per kLOC: {n_all / kloc:.3f} (admission audit), {peers}.",
    ]
    comparison = Comparison(corpus, kloc, tally, ruff_tally)
    if ruff_labels is not None and ruff_tally is not None:
        out += [
            "",
            f"ruff's ASYNC findings, labelled by the same rule in {ruff_file.name}:",
            "",
            *rule_table(ruff_tally),
            "",
            *side_by_side([comparison]),
        ]
    out += gone_labels(labels, tally.matched, "these rules")
    if ruff_labels is not None and ruff_tally is not None:
        out += gone_labels(ruff_labels, ruff_tally.matched, "ruff")
    return "\n".join(out), comparison


def gone_labels(
    labels: dict[LabelKey, dict[str, str]], matched: set[LabelKey], whose: str
) -> list[str]:
    """The labels that no finding matched (what a tool no longer reports), with their notes."""
    gone = sorted(set(labels) - matched)
    if not gone:
        return []
    return [
        "",
        f"{len(gone)} labels match no finding of {whose}:",
        *(
            f"- `{':'.join(map(str, key))}` (was {labels[key]['label']}: {labels[key]['note']})"
            for key in gone
        ),
    ]


def write_results(block: str, text: str) -> None:
    """Replace the block ``block`` of RESULTS.md with ``text`` (the block must exist)."""
    begin, end = f"<!-- audit-eval:{block} -->", f"<!-- /audit-eval:{block} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    results = RESULTS.read_text()
    if not pattern.search(results):
        raise SystemExit(f"{RESULTS} has no block {begin} ... {end}: add one where it belongs")
    RESULTS.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="+", choices=sorted(CORPORA), default=list(CORPORA))
    parser.add_argument("--allow-unlabelled", action="store_true")
    parser.add_argument("--no-flake8", action="store_true", help="skip flake8-async (slow)")
    parser.add_argument("--write-results", action="store_true", help="update benches/RESULTS.md")
    parser.add_argument("--block", help="the RESULTS.md block to write (one corpus only)")
    args = parser.parse_args()
    if args.block and len(args.corpus) != 1:
        parser.error("--block names the block of one corpus")

    failed = False
    comparisons = []
    for corpus in args.corpus:
        text, comparison = evaluate(corpus, no_flake8=args.no_flake8)
        comparisons.append(comparison)
        print(text, end="\n\n")
        unlabelled = [(CORPORA[corpus][1], comparison.ours.unlabelled)]
        if comparison.ruff is not None:
            unlabelled.append((ruff_labels_file(corpus).name, comparison.ruff.unlabelled))
        complete = True
        for file, keys in unlabelled:
            if keys:
                complete = False
                print(f"{len(keys)} findings have no label in {file}:", file=sys.stderr)
                print("\n".join(f"  {key}" for key in keys), file=sys.stderr)
        failed = failed or (not complete and not args.allow_unlabelled)
        if complete and args.write_results:
            write_results(args.block or corpus, text)
    labelled = [each for each in comparisons if each.ruff is not None]
    if len(labelled) > 1:
        names = ", ".join(f"`{each.corpus}`" for each in labelled)
        lines = [f"Over the corpora whose ruff findings are labelled ({names}):", ""]
        text = "\n".join([*lines, *side_by_side(labelled)])
        print(text)
        complete = not any(
            each.ours.unlabelled or (each.ruff and each.ruff.unlabelled) for each in labelled
        )
        if complete and args.write_results and not args.block:
            write_results("ruff-labelled", text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
