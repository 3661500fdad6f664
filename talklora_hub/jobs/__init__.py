"""End-to-end jobs, from nothing to a served Hub: the main job (`zoo_build`: publish the shipped zoo, load
it back in a fresh interpreter, serve the Space) and the short walk (`walkthrough`: wrap, train, save,
reload, print routing). They sit above every other package and below only the command line."""
