/* An op library that cannot load: it needs a symbol nothing defines, as
   tensorflow-decision-forests' inference.so needs one TensorFlow 2.21 no longer has. */
extern int tfgate_symbol_nobody_defines(void);
int tfgate_uses_it(void) { return tfgate_symbol_nobody_defines(); }
