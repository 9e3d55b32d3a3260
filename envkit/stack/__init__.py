"""The shared stack: one set of services for every process of a checkout.

``stack`` orchestrates (acquire, release, down); ``reconcile`` decides, as a
pure function, what to do about the recorded state and what Docker reports;
``launch`` brings services up; ``health`` checks them; ``objects`` are the
stack's containers and network; ``state`` is its state file; ``lease`` its
holders and lock; ``idle`` the one rule for what happens when the last holder
leaves; ``reaper`` the detached watchdog; ``handle`` and ``status`` what users
read.
"""
