"""The workspace controller: pure planning and status (shared by both backends), and the
reconcile machinery (work queue, leader election) the backends drive."""
