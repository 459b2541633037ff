"""A Django project (and its one app) for the Django integration's tests
(``tests/integrations/test_django_databases.py``): its settings come from the environment,
so that each test runs it on a database of its own."""
