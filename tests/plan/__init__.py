"""Tests of lth.plan: the planner replayed from every state, the search policies, cost."""
