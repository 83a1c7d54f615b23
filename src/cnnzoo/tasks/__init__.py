"""The tasks the engine trains: importing this package registers each of them with the engine.

Adding a task is one new module here: subclass cnnzoo.engine.task.Task, decorate it with
`@register_task`, and import the module below.
"""

from . import classification  # noqa: F401
from . import denoise_task  # noqa: F401
