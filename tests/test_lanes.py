"""The lane on its own: order, coalescing groups, write pauses, failing and discarding what waits."""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tradehub.server.lanes import MAX_GROUP, Lane, Task


class _Route:
    def __init__(self, coalesces=True):
        self.handle_group = object() if coalesces else None


class Recorder:
    """An execute() that records each group it is given, finishing at once or when told."""

    def __init__(self, hold=False):
        self.groups = []
        self.hold = hold
        self.running = None

    async def execute(self, tasks):
        self.groups.append([t.request_id for t in tasks])
        if self.hold:
            self.running = Deferred()
            await self.running


def tasks(route, *ids, error=None):
    return [Task(i, route=route, error=error) for i in ids]


class LaneTests(SynchronousTestCase):
    def started(self, recorder, writable=lambda: None):
        lane = Lane(recorder.execute, writable)
        lane.start()
        return lane

    def push_held(self, recorder, lane, queued):
        """Hold the lane busy with request 0 so that C{queued} wait together."""
        recorder.hold = True
        lane.push(Task(0))
        for task in queued:
            lane.push(task)
        recorder.hold = False
        recorder.running.callback(None)

    def test_consecutive_tasks_of_a_coalescing_route_run_as_one_group(self):
        recorder, route = Recorder(), _Route()
        lane = self.started(recorder)
        self.push_held(recorder, lane, tasks(route, 1, 2, 3))
        self.assertEqual(recorder.groups, [[0], [1, 2, 3]])

    def test_a_failed_task_is_never_grouped_with_good_ones(self):
        recorder, route = Recorder(), _Route()
        lane = self.started(recorder)
        failed = Task(3, route=route, error=ValueError("bad payload"))
        self.push_held(recorder, lane, tasks(route, 1, 2) + [failed] + tasks(route, 4, 5))
        self.assertEqual(recorder.groups, [[0], [1, 2], [3], [4, 5]])

    def test_a_failed_first_task_takes_no_followers(self):
        recorder, route = Recorder(), _Route()
        lane = self.started(recorder)
        failed = Task(1, route=route, error=ValueError("bad payload"))
        self.push_held(recorder, lane, [failed] + tasks(route, 2, 3))
        self.assertEqual(recorder.groups, [[0], [1], [2, 3]])

    def test_tasks_of_different_routes_or_of_a_route_that_does_not_coalesce_run_alone(self):
        recorder, first, second, single = Recorder(), _Route(), _Route(), _Route(coalesces=False)
        lane = self.started(recorder)
        self.push_held(recorder, lane, tasks(first, 1, 2) + tasks(second, 3) + tasks(single, 4, 5))
        self.assertEqual(recorder.groups, [[0], [1, 2], [3], [4], [5]])

    def test_a_group_holds_at_most_max_group_tasks(self):
        recorder, route = Recorder(), _Route()
        lane = self.started(recorder)
        self.push_held(recorder, lane, tasks(route, *range(1, MAX_GROUP + 3)))
        self.assertEqual([len(g) for g in recorder.groups], [1, MAX_GROUP, 2])

    def test_nothing_runs_while_the_transport_cannot_take_answers(self):
        recorder, paused = Recorder(), Deferred()
        state = {"paused": paused}
        lane = self.started(recorder, lambda: state["paused"])
        lane.push(Task(1))
        self.assertEqual(recorder.groups, [])
        state["paused"] = None
        paused.callback(None)
        self.assertEqual(recorder.groups, [[1]])

    def test_tasks_dropped_while_writes_are_paused_never_run_and_the_lane_goes_on(self):
        recorder, paused = Recorder(), Deferred()
        state = {"paused": paused}
        lane = self.started(recorder, lambda: state["paused"])
        lane.push(Task(1))
        lane.discard_pending()
        state["paused"] = None
        paused.callback(None)
        lane.push(Task(2))
        self.assertEqual(recorder.groups, [[2]])

    def test_fail_pending_answers_waiting_tasks_with_the_error_in_their_turn(self):
        recorder = Recorder(hold=True)
        lane = self.started(recorder)
        waiting = tasks(_Route(coalesces=False), 1, 2)
        lane.push(Task(0))
        for task in waiting:
            lane.push(task)
        refusal = ValueError("deadline passed")
        self.assertEqual(lane.fail_pending(refusal), 2)
        self.assertEqual([t.error for t in waiting], [refusal, refusal])
        recorder.hold = False
        recorder.running.callback(None)
        self.assertEqual(recorder.groups, [[0], [1], [2]])

    def test_discard_pending_removes_what_has_not_started_and_idle_comes_after_the_running_task(self):
        recorder, idle = Recorder(hold=True), []
        lane = Lane(recorder.execute, idle=lambda: idle.append(len(lane)))
        lane.start()
        lane.push(Task(0))
        lane.push(Task(1))
        self.assertEqual([t.request_id for t in lane.discard_pending()], [1])
        self.assertEqual(idle, [0], "idle once, at the start")
        recorder.running.callback(None)
        self.assertEqual(idle, [0, 0])
        self.assertEqual(recorder.groups, [[0]])

    def test_close_ends_the_consumer_once_the_queue_is_empty_and_refuses_new_tasks(self):
        recorder = Recorder(hold=True)
        lane = self.started(recorder)
        lane.push(Task(0))
        closed = lane.close()
        self.assertNoResult(closed)
        recorder.running.callback(None)
        self.successResultOf(closed)
        self.assertRaises(RuntimeError, lane.push, Task(1))
