"""Task suites as data: the spec files and their parsing (:mod:`promptrl.tasks.spec`) and the Gymnasium envs
(:mod:`promptrl.tasks.envs`)."""
