"""Container actors: started on demand, serialized, stopped when idle."""

from __future__ import annotations

import threading
import time

import pykka
import pytest

from actors.containers import ContainerActors
from actors.metadata import CreateContainer, DeleteContainer, MetadataActor
from actors.supervision import Directory

SPEC = {"type_url": "t", "value": b"{}"}


@pytest.fixture
def system(store):
    directory = Directory()
    directory.set("metadata", MetadataActor.start(None, store))
    actors = ContainerActors(directory, None, idle_seconds=0.2)
    yield directory, actors
    actors.stop_all()
    pykka.ActorRegistry.stop_all()


def _create(directory, reply_factory, cid):
    reply = reply_factory()
    container = {"id": cid, "labels": {}, "image": "", "runtime": "", "spec": SPEC, "rootfs": ""}
    directory.tell("metadata", CreateContainer("default", container, reply))
    assert "body" in reply.result()


def test_a_container_without_an_actor_is_not_sent_anything_unless_asked_to_start(system):
    _, actors = system
    assert actors.tell("default", "web", object(), start=False) is False
    assert len(actors) == 0


def test_a_delete_through_the_containers_actor_commits_before_the_next_message(
    system, reply_factory
):
    directory, actors = system
    _create(directory, reply_factory, "web")
    first, second = reply_factory(), reply_factory()
    actors.tell("default", "web", DeleteContainer("default", "web", first))
    actors.tell("default", "web", DeleteContainer("default", "web", second))
    assert first.result()["body"] == {}
    assert second.result()["error"]["code"] == "NOT_FOUND"


def test_an_idle_actor_is_stopped_and_a_new_one_starts_on_the_next_message(system, reply_factory):
    directory, actors = system
    _create(directory, reply_factory, "web")
    _create(directory, reply_factory, "db")
    reply = reply_factory()
    actors.tell("default", "web", DeleteContainer("default", "web", reply))
    reply.result()
    assert actors.alive("default", "web")
    time.sleep(0.05)
    assert actors.reap(time.monotonic() + 1) == 1
    assert not actors.alive("default", "web")
    again = reply_factory()
    assert actors.tell("default", "db", DeleteContainer("default", "db", again))
    assert again.result()["body"] == {}


class GatedMetadata(MetadataActor):
    """Holds each commit until the gate opens."""

    def __init__(self, supervisor, store, gate):
        super().__init__(supervisor, store)
        self.gate = gate

    def _commit(self):
        self.gate.wait(5)
        super()._commit()


def test_an_actor_with_a_message_in_flight_is_not_reaped(system, reply_factory, store):
    directory, actors = system
    _create(directory, reply_factory, "web")
    gate = threading.Event()
    directory.set("metadata", GatedMetadata.start(None, store, gate))
    reply = reply_factory()
    actors.tell("default", "web", DeleteContainer("default", "web", reply))
    time.sleep(0.05)
    assert actors.reap(time.monotonic() + 10) == 0, "reaped while its delete was in flight"
    assert actors.alive("default", "web")
    gate.set()
    assert reply.result()["body"] == {}
    time.sleep(0.05)
    assert actors.reap(time.monotonic() + 10) == 1


def test_container_actor_threads_are_named_after_their_container(system, reply_factory):
    directory, actors = system
    _create(directory, reply_factory, "web")
    reply = reply_factory()
    actors.tell("default", "web", DeleteContainer("default", "web", reply))
    reply.result()
    assert "container:default/web" in {t.name for t in threading.enumerate()}
