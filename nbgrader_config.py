"""nbgrader configuration for the course (run nbgrader from the repository's root).

`solutions/<assignment>/` holds the instructors' source notebooks (solutions and hidden tests);
`nbgrader generate_assignment <assignment>` writes the student versions to
`exercises/<assignment>/`.
One assignment per chapter, named `chNN_<name>`.
"""

c = get_config()  # noqa: F821 - injected by nbgrader

c.CourseDirectory.course_id = "llmcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# Student versions carry no outputs; the stub for a solution region is the same everywhere.
c.ClearOutput.enabled = True
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A notebook runs at most this long when it is autograded.
c.ExecutePreprocessor.timeout = 300
